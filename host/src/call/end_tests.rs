//! Every kind of plugin failure reaches the call's metrics label and its record from the typed
//! error ([`SessionError::kind`]), with no message read.

use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

use super::end::{call_end_record, failure_kind, record_call_metrics};
use super::*;
use crate::plugin::PluginError;
use crate::plugin::budget::CpuExceeded;

/// Every [`SessionError`] variant, with the kind metrics and records must label it with.
fn every_kind() -> Vec<(SessionError, &'static str)> {
    vec![
        (
            SessionError::Plugin(PluginError {
                kind: "upstream",
                message: "503 from the model".into(),
            }),
            "error",
        ),
        (SessionError::Trap("unreachable".into()), "trap"),
        (SessionError::TimeBudget { budget_ms: 200 }, "time"),
        (
            SessionError::Cpu(CpuExceeded {
                percent: 25,
                burst_ms: 3000,
                used_ms: 4000,
                call_ms: 4000,
            }),
            "cpu",
        ),
        (SessionError::Memory("grow refused".into()), "memory"),
        (SessionError::Output("a mark of 300 bytes".into()), "output"),
        (SessionError::Contract("bad outputs".into()), "contract"),
        (SessionError::Panic("oops".into()), "panic"),
        (SessionError::HostPanic("resampler".into()), "host-panic"),
        (SessionError::Host("stage fell behind".into()), "host"),
    ]
}

/// A metric's labels, as `(key, value)` pairs.
type Labels = Vec<(String, String)>;

/// Counters incremented through the `metrics` facade, by name and labels.
#[derive(Default, Clone)]
struct Counted(Arc<Mutex<Vec<(String, Labels)>>>);

struct Increment(Counted, String, Labels);

impl CounterFn for Increment {
    fn increment(&self, _value: u64) {
        if let Ok(mut seen) = self.0.0.lock() {
            seen.push((self.1.clone(), self.2.clone()));
        }
    }

    fn absolute(&self, _value: u64) {}
}

impl Recorder for Counted {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        Counter::from_arc(Arc::new(Increment(
            self.clone(),
            key.name().to_string(),
            labels,
        )))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn every_failure_kind_labels_the_metric_and_the_record() {
    for (error, kind) in every_kind() {
        assert_eq!(error.kind(), kind, "{error}");
        let reason = EndReason::PluginFailed(PluginFailure::of("p", None, error.clone()));
        let stats = CallStats {
            agent: Some("a".into()),
            ..CallStats::default()
        };
        let counted = Counted::default();
        metrics::with_local_recorder(&counted, || record_call_metrics(&reason, &stats, None));
        let seen = counted.0.lock().map(|s| s.clone()).unwrap_or_default();
        let failure = seen
            .iter()
            .find(|(name, _)| name == crate::metrics::PLUGIN_FAILURES)
            .unwrap_or_else(|| panic!("{kind}: no failure counted in {seen:?}"));
        assert!(
            failure.1.contains(&("kind".into(), kind.into()))
                && failure.1.contains(&("plugin".into(), "p".into())),
            "{kind}: {failure:?}"
        );
        let record = call_end_record("CA1", &reason, &stats);
        assert_eq!(record.failure_kind.as_deref(), Some(kind));
        assert_eq!(record.outcome, "plugin-failed");
        assert_eq!(failure_kind(&reason, &stats), Some(kind), "the log field");
    }
}

/// A failure at `hangup`, after the call ended for another reason, is labelled the same way.
#[test]
fn a_failure_at_hangup_labels_the_metric_and_the_record() {
    for (error, kind) in every_kind() {
        let stats = CallStats {
            end_failure: Some(EndFailure {
                plugin: "p".into(),
                kind: error.kind(),
                message: error.to_string(),
            }),
            ..CallStats::default()
        };
        let counted = Counted::default();
        metrics::with_local_recorder(&counted, || {
            record_call_metrics(&EndReason::Stop, &stats, None)
        });
        let seen = counted.0.lock().map(|s| s.clone()).unwrap_or_default();
        assert!(
            seen.iter()
                .any(|(name, labels)| name == crate::metrics::PLUGIN_FAILURES
                    && labels.contains(&("kind".into(), kind.into()))),
            "{kind}: {seen:?}"
        );
        let record = call_end_record("CA1", &EndReason::Stop, &stats);
        assert_eq!(record.failure_kind.as_deref(), Some(kind));
        assert_eq!(record.outcome, "completed");
    }
}

/// A call that ended without a plugin failure has no failure kind anywhere.
#[test]
fn a_clean_end_has_no_failure_kind() {
    let stats = CallStats::default();
    let counted = Counted::default();
    metrics::with_local_recorder(&counted, || {
        record_call_metrics(&EndReason::Stop, &stats, None)
    });
    let seen = counted.0.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        !seen
            .iter()
            .any(|(name, _)| name == crate::metrics::PLUGIN_FAILURES),
        "{seen:?}"
    );
    assert_eq!(
        call_end_record("CA1", &EndReason::Stop, &stats).failure_kind,
        None
    );
    assert_eq!(failure_kind(&EndReason::Stop, &stats), None);
}
