//! Metering a WASM session: the store's resource limiter (memory cap, remembering a refused
//! growth) and the run-time meter its epoch callback consults (time budget per call, CPU share
//! over the call, slicing with a yield to the back of the run queue; see [`super::super::budget`]).

use super::*;

/// The store's limits, remembering a refused memory growth so that the trap it leads to (the
/// guest's allocator gives up) is reported as running out of memory.
pub(super) struct Limiter {
    pub(super) limits: StoreLimits,
    /// Bytes the guest last asked its memory to grow to and was refused.
    pub(super) memory_refused: Option<usize>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.memory_refused = Some(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The run-time meter of one session: see the module docs and [`super::budget`].
pub(super) struct Meter {
    pub(super) clock: Arc<SliceClock>,
    /// Run time of the call in progress before its current slice.
    pub(super) run_before: Duration,
    /// Budget of the call in progress.
    pub(super) budget: Duration,
    pub(super) bucket: CpuBucket,
    /// Why the epoch callback interrupted the guest, for the error the trap becomes.
    pub(super) stopped: Option<SessionError>,
}

impl Meter {
    pub(super) fn new(cpu: CpuLimits) -> Self {
        Self {
            clock: SliceClock::new(),
            run_before: Duration::ZERO,
            budget: HANDLE_BUDGET,
            bucket: CpuBucket::new(cpu, Instant::now()),
            stopped: None,
        }
    }

    /// A call into the guest starts now, with `budget` of run time.
    pub(super) fn begin(&mut self, budget: Duration) {
        self.run_before = Duration::ZERO;
        self.budget = budget;
        self.stopped = None;
        self.clock.start_slice();
    }

    /// The epoch callback: stop the guest, let it go on, or slice it.
    pub(super) fn on_tick(&mut self) -> UpdateDeadline {
        let in_slice = self.clock.in_slice();
        let running = self.run_before + in_slice;
        if running > self.budget {
            self.stopped = Some(SessionError::TimeBudget {
                budget_ms: self.budget.as_millis() as u64,
            });
            return UpdateDeadline::Interrupt;
        }
        if let Err(e) = self.bucket.check(running, Instant::now()) {
            self.stopped = Some(SessionError::Cpu(e));
            return UpdateDeadline::Interrupt;
        }
        if in_slice < MIN_SLICE {
            return UpdateDeadline::Continue(1);
        }
        self.run_before = running;
        let clock = self.clock.clone();
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                // `yield_now` is deferred by tokio until the I/O driver has been polled (so a
                // neighbour whose frame just arrived is made ready), but it then wakes into the
                // worker's LIFO slot, ahead of that neighbour; yielding once more by waking
                // itself puts the guest at the back of the run queue, behind it.
                tokio::task::yield_now().await;
                BackOfTheQueue(false).await;
                clock.start_slice();
            }),
        )
    }

    /// The call returned: charge its run time to the CPU share.
    pub(super) fn end(&mut self) -> Result<(), SessionError> {
        let running = self.run_before + self.clock.in_slice();
        self.run_before = Duration::ZERO;
        self.bucket.charge(running, Instant::now())?;
        Ok(())
    }
}

/// Returns `Pending` once, waking its own task first: tokio reschedules a task that woke itself
/// while being polled at the back of the worker's run queue (not in its LIFO slot).
pub(super) struct BackOfTheQueue(bool);

impl std::future::Future for BackOfTheQueue {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
