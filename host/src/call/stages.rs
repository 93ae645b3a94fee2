//! Pipeline stages off the call task: each of a pipeline call's three stage sessions (STT, LLM,
//! TTS) runs in its own task with its own host I/O, fed through a bounded queue, and reports its
//! outputs to the call task through one shared bounded queue.
//!
//! So a slow stage never stalls the call: while a local recognizer transcribes a turn (hundreds
//! of ms), the call task keeps pacing playback and watching the caller's audio for barge-in. A
//! native plugin's calls run under [`tokio::task::block_in_place`], so a compute-heavy plugin
//! holds a thread of its own, never an async worker other calls' frames need.
//!
//! Cancellation is by epoch: each `cancel` the call task sends starts a new epoch, and every
//! report carries the epoch of the input that caused it, so the call task drops outputs of work
//! that was cancelled while they were queued.

use std::sync::Arc;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::mpsc;

use crate::plugin::breaker::CircuitBreaker;

use crate::plugin::{SessionError, Stage, StageInput, StageOutput, StageSession};

/// Inputs queued for one stage at most: 5 s of 20 ms caller frames for the STT. A stage that
/// falls further behind loses caller audio (counted), never the call task's pace.
pub const STAGE_QUEUE: usize = 256;

/// Reports queued for the call task at most, from all three stages together.
pub const REPORT_QUEUE: usize = 256;

/// What one stage did with one input (or one I/O completion).
#[derive(Debug)]
pub struct StageReport {
    /// Which stage.
    pub stage: Stage,
    /// The epoch of the input that caused it (see the module docs).
    pub epoch: u64,
    /// The outputs, or why the stage failed (the stage has stopped).
    pub result: Result<Vec<StageOutput>, SessionError>,
}

/// The input queue was full: the stage is not keeping up.
#[derive(Debug, thiserror::Error)]
#[error("the {0} stage is not keeping up ({STAGE_QUEUE} inputs queued)")]
pub struct Backlogged(pub &'static str);

/// Who answers for a stage's failure after its call ended (a `hangup` that traps or overruns):
/// the stage task counts it itself, since the call task is gone by then.
#[derive(Debug, Clone)]
pub struct Blame {
    /// The plugin's name in agents.toml.
    pub plugin: String,
    /// Its circuit breaker.
    pub breaker: Option<Arc<CircuitBreaker>>,
}

/// The call task's handle on one running stage. Dropping it ends the stage's task once it has
/// drained its queue.
#[derive(Debug)]
pub struct StageWorker {
    stage: Stage,
    tx: mpsc::Sender<(u64, StageInput)>,
    epoch: u64,
}

impl StageWorker {
    /// Starts `session` in a task of its own. A session whose calls hold their thread
    /// ([`StageSession::blocks_thread`]: it cannot yield) runs them with
    /// [`tokio::task::block_in_place`] on a multi-threaded runtime, and on the blocking pool on a
    /// single-threaded one (a `serve --shards` shard), so the other calls on the thread go on
    /// meanwhile.
    pub fn spawn(
        stage: Stage,
        session: StageSession,
        reports: mpsc::Sender<StageReport>,
        blame: Blame,
    ) -> Self {
        let (tx, rx) = mpsc::channel(STAGE_QUEUE);
        tokio::spawn(run(stage, session, rx, reports, blame));
        Self {
            stage,
            tx,
            epoch: 0,
        }
    }

    /// Queues `input`. A `cancel` starts a new epoch first, so everything the stage reports for
    /// earlier inputs becomes stale.
    ///
    /// # Errors
    /// [`Backlogged`] when the queue is full (or the stage has stopped after a failure, which
    /// its report has already told).
    pub fn send(&mut self, input: StageInput) -> Result<(), Backlogged> {
        if matches!(input, StageInput::Cancel) {
            self.epoch += 1;
        }
        self.tx
            .try_send((self.epoch, input))
            .map_err(|_| Backlogged(self.stage.describe()))
    }

    /// Whether a report is of the current epoch (not of cancelled work).
    pub fn is_current(&self, report: &StageReport) -> bool {
        report.epoch == self.epoch
    }
}

async fn run(
    stage: Stage,
    mut session: StageSession,
    mut inputs: mpsc::Receiver<(u64, StageInput)>,
    reports: mpsc::Sender<StageReport>,
    blame: Blame,
) {
    // `block_in_place` needs the multi-threaded runtime.
    let multi_threaded = Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread;
    let blocking = session.blocks_thread();
    let mut epoch = 0;
    loop {
        let input = tokio::select! {
            biased;
            msg = inputs.recv() => match msg {
                Some((e, input)) => {
                    epoch = e;
                    input
                }
                None => break,
            },
            event = session.next_io_event() => StageInput::Io(event),
        };
        let last = matches!(input, StageInput::Hangup);
        let result = if !blocking {
            session.handle(input).await
        } else if multi_threaded {
            tokio::task::block_in_place(|| Handle::current().block_on(session.handle(input)))
        } else {
            let handle = Handle::current();
            let call = tokio::task::spawn_blocking(move || {
                let result = handle.block_on(session.handle(input));
                (session, result)
            });
            match call.await {
                Ok((back, result)) => {
                    session = back;
                    result
                }
                Err(e) => {
                    // The session went down with the thread: report and stop.
                    let result = Err(SessionError::Host(format!("the plugin call failed: {e}")));
                    let _ = reports
                        .send(StageReport {
                            stage,
                            epoch,
                            result,
                        })
                        .await;
                    break;
                }
            }
        };
        let failed = result.is_err();
        if last {
            if let Err(e) = &result {
                // Counted like any other failure: metrics by kind and the breaker.
                tracing::warn!(plugin = %blame.plugin, stage = stage.describe(), error = %e, "pipeline stage failed on hangup");
                metrics::counter!(
                    crate::metrics::PLUGIN_FAILURES,
                    "plugin" => blame.plugin.clone(),
                    "kind" => e.kind()
                )
                .increment(1);
                if let Some(breaker) = &blame.breaker {
                    breaker.record_failure();
                }
            }
            break;
        }
        // Most inputs (caller frames to the STT) cause nothing: no report for them, so the
        // call task is not woken 50 times a second per stage for nothing.
        if matches!(&result, Ok(outputs) if outputs.is_empty()) {
            continue;
        }
        let report = StageReport {
            stage,
            epoch,
            result,
        };
        // A failed session must not be entered again: report it and stop.
        if reports.send(report).await.is_err() || failed {
            break;
        }
    }
}
