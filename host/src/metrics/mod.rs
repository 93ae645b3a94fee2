//! The gateway's Prometheus metrics: their names, labels and buckets, and the recorder that
//! `GET /metrics` renders (Prometheus text exposition format).
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` histograms). The per-frame
//! histograms bypass the recorder: a call counts them itself and merges once a second
//! ([`frame`]); other per-call metrics are recorded through handles a call fetches once at its
//! start, never a registry lookup per frame.

pub mod frame;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: calls whose task is running.
pub const ACTIVE_CALLS: &str = "switchboard_active_calls";
/// Counter `{agent, outcome}`: calls ended, by agent and outcome (`completed`, `hung-up`,
/// `transferred`, `plugin-failed`, …; see `EndReason::outcome`).
pub const CALLS: &str = "switchboard_calls_total";
/// Histogram `{route}`: time to answer a Twilio webhook (`voice`, `status`), seconds.
pub const WEBHOOK_SECONDS: &str = "switchboard_webhook_duration_seconds";
/// Histogram: host time per inbound Media Streams frame — parse, convert, hand to the plugin,
/// carry out its outputs, send the frames due — seconds.
pub const FRAME_SECONDS: &str = "switchboard_frame_host_seconds";
/// Histogram: how far the audio sent to Twilio runs ahead of what the caller has heard, sampled
/// when frames are sent, seconds.
pub const PLAYBACK_LEAD_SECONDS: &str = "switchboard_playback_lead_seconds";
/// Counter: silent frames inserted for gaps in Twilio's `media.chunk` numbering.
pub const INBOUND_GAP_FRAMES: &str = "switchboard_inbound_gap_frames_total";
/// Counter `{plugin, kind}`: plugin failures that ended a call; `kind` is `error` (the plugin
/// returned one), `trap` (panic, time or memory limit) or `open` (the session did not open).
pub const PLUGIN_FAILURES: &str = "switchboard_plugin_failures_total";
/// Counter `{outcome}`: callback delivery attempts (`delivered`, `retry`, `gave_up`); see
/// [`crate::callbacks`].
pub const CALLBACK_ATTEMPTS: &str = "switchboard_callback_attempts_total";

/// Counts one callback delivery attempt with `outcome`.
pub fn callback_attempt(outcome: &'static str) {
    metrics::counter!(CALLBACK_ATTEMPTS, "outcome" => outcome).increment(1);
}

/// Counter `{result}`: event webhooks (`delivered`; `failed`: every attempt failed, or the
/// receiver refused it; `dropped`: its destination's queue was full); see
/// [`crate::events::webhooks`].
pub const EVENT_WEBHOOKS: &str = "switchboard_event_webhooks_total";

/// Counts one event webhook with `result`.
pub fn event_webhook(result: &'static str) {
    metrics::counter!(EVENT_WEBHOOKS, "result" => result).increment(1);
}

/// Gauge `{plugin}`: 1 while the plugin's circuit breaker is open, else 0.
pub const CIRCUIT_OPEN: &str = "switchboard_plugin_circuit_open";
/// Counter `{result}`: configuration reloads, `ok` or `failed`.
pub const RELOADS: &str = "switchboard_config_reloads_total";
/// Histogram `{agent, stage}`: pipeline turn latency from the end of the caller's speech to
/// `stt_final`, `llm_first_text`, `tts_first_audio` and `first_audio_out`, and (`endpointing`)
/// from the caller's last speech frame to the turn-taking's decision that the turn was over,
/// seconds.
pub const TURN_SECONDS: &str = "switchboard_turn_latency_seconds";
/// Counter `{result}`: Twilio request signatures, `accepted` or `rejected`.
pub const SIGNATURES: &str = "switchboard_twilio_signatures_total";
/// Counter `{result}`: operator API requests, `ok`, `unauthorized` or `rate_limited`.
pub const API_REQUESTS: &str = "switchboard_api_requests_total";
/// Gauge: 1 while the gateway drains (SIGTERM received), else 0.
pub const DRAINING: &str = "switchboard_draining";
/// Counter: call-record writes committed (each event of a call is one write).
pub const RECORDS_WRITES: &str = "switchboard_records_writes_total";
/// Gauge: call-record writes held in memory because the database (PostgreSQL) is unreachable,
/// waiting to be retried.
pub const RECORDS_HELD: &str = "switchboard_records_held_writes";
/// Counter: call-record write attempts that failed and are retried.
pub const RECORDS_RETRIES: &str = "switchboard_records_write_retries_total";
/// Counter `{reason}`: call-record writes given up (`full`: the hold was full during an outage;
/// `refused`: the database refused the write; `shutdown`: still held when the gateway stopped).
pub const RECORDS_LOST: &str = "switchboard_records_lost_writes_total";
/// Counter: calls of dead fleet instances this instance marked `interrupted`.
pub const FLEET_INTERRUPTED: &str = "switchboard_fleet_interrupted_calls_total";

/// Tool calls finished, by `tool` and `outcome` (`ok`, `error`).
pub const TOOL_CALLS: &str = "switchboard_tool_calls_total";
/// Latency of tool calls, from the plugin's call to the result, by `tool`.
pub const TOOL_SECONDS: &str = "switchboard_tool_call_duration_seconds";
/// Histogram buckets for `_seconds` metrics: 100 µs to 10 s, covering a frame's host time
/// (tens of µs) up to a slow pipeline turn.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often histogram samples are folded into their buckets (bounds their memory between
/// scrapes).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle) and
/// starts its upkeep task on the current tokio runtime.
///
/// # Errors
/// Another recorder is already installed in this process.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    let handle = HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            describe();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let upkeep = handle.clone();
                runtime.spawn(async move {
                    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            Ok(handle)
        })
        .clone();
    handle.map_err(MetricsError)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(ACTIVE_CALLS, "Calls whose task is running.");
    describe_counter!(CALLS, "Calls ended, by agent and outcome.");
    describe_counter!(TOOL_CALLS, "Tool calls finished, by tool and outcome.");
    describe_histogram!(
        TOOL_SECONDS,
        Unit::Seconds,
        "Tool call latency, from the plugin's call to its result, by tool."
    );
    describe_histogram!(
        WEBHOOK_SECONDS,
        Unit::Seconds,
        "Time to answer a Twilio webhook."
    );
    describe_counter!(
        INBOUND_GAP_FRAMES,
        "Silent frames inserted for gaps in media.chunk."
    );
    describe_counter!(PLUGIN_FAILURES, "Plugin failures that ended a call.");
    describe_counter!(RECORDS_WRITES, "Call-record writes committed.");
    describe_gauge!(
        RECORDS_HELD,
        "Call-record writes held while the database is unreachable."
    );
    describe_counter!(RECORDS_RETRIES, "Call-record write attempts retried.");
    describe_counter!(RECORDS_LOST, "Call-record writes given up, by reason.");
    describe_counter!(
        FLEET_INTERRUPTED,
        "Calls of dead fleet instances marked interrupted by this instance."
    );
    describe_counter!(
        CALLBACK_ATTEMPTS,
        "Callback delivery attempts, by outcome (delivered, retry, gave_up)."
    );
    describe_counter!(
        EVENT_WEBHOOKS,
        "Event webhooks, by result (delivered, failed, dropped)."
    );
    describe_gauge!(
        CIRCUIT_OPEN,
        "1 while the plugin's circuit breaker is open."
    );
    describe_counter!(RELOADS, "Configuration reloads, ok or failed.");
    describe_histogram!(
        TURN_SECONDS,
        Unit::Seconds,
        "Pipeline turn latency from the end of the caller's speech, by stage; stage endpointing: the time the turn-taking took to decide the turn was over, from the last speech frame."
    );
    describe_counter!(
        SIGNATURES,
        "Twilio request signatures, accepted or rejected."
    );
    describe_counter!(API_REQUESTS, "Operator API requests, by result.");
    describe_gauge!(DRAINING, "1 while the gateway drains.");
}
