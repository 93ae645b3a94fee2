//! Event webhooks: each agent's live call events ([`super::Event`]) POSTed to the operator URL
//! its `[agents.events]` names ([`crate::config::events`]), signed by the **Standard Webhooks**
//! scheme as the callbacks of outbound calls are ([`crate::callbacks`]: `webhook-id` is the
//! event's id, `webhook-timestamp` the Unix seconds of the attempt, `webhook-signature` the
//! HMAC-SHA256 of `{id}.{timestamp}.{body}`), the body being the event's JSON line as the SSE
//! feed carries it.
//!
//! One deliverer per gateway ([`spawn`]), fed by the bus's `webhooks` sink. It reads the current
//! configuration for each event as it leaves the bus, so a reload applies to the events after
//! it. Each destination URL has a worker of its own with a bounded queue
//! ([`QUEUE_CAPACITY`]; when full the *oldest* event is dropped, so a receiver that comes back
//! gets the calls' latest state, `call.ended` included) and at most [`MAX_IN_FLIGHT`] requests
//! at a time, one per call, so each call's events arrive in order. A request that times out
//! ([`ATTEMPT_TIMEOUT`]), fails to connect, or gets a 5xx or 429 is retried after [`BACKOFF`];
//! any other answer than 2xx fails the event at once. Delivery is at least once (the same
//! `webhook-id` on every attempt) and best effort: events live in memory only.
//!
//! Nothing here can hold up a call: calls hand events to the bus without waiting (a full sink
//! drops and counts them), and a hung or dead receiver only fills its own destination's queue.
//! Outcomes are counted in `switchboard_event_webhooks_total{result}` (`delivered`, `failed`,
//! `dropped`); failures and drops are logged once per burst, not per event.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::{Event, EventBus};
use crate::callbacks::WebhookSecret;
use crate::config::Config;

/// The bus sink's name (in `switchboard_events_dropped_total{sink}`).
pub const SINK: &str = "webhooks";

/// Events waiting between the bus and the dispatcher. The dispatcher only sorts events into
/// queues (no I/O), so this fills only if it is starved of CPU for a long while.
pub const SINK_CAPACITY: usize = 4096;

/// Events one destination may have waiting: a couple of minutes of a busy agent's events, so a
/// receiver's restart loses nothing, while a dead one holds a bounded amount of memory.
pub const QUEUE_CAPACITY: usize = 1024;

/// Requests one destination may have in flight (each for a different call).
pub const MAX_IN_FLIGHT: usize = 4;

/// The longest one attempt may take, connecting included: a receiver that answers later is a
/// failed attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The waits before the second, third and fourth attempts; four failed attempts fail the event
/// (events are live: a receiver down for longer has missed the moment anyway).
pub const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// A destination's worker stops after this long with nothing to do (its URL may have left the
/// configuration); the next event for it starts a new one.
pub const IDLE_EXIT: Duration = Duration::from_secs(60);

/// How deliveries are paced; [`Policy::default`] is the constants above (tests shorten them).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Per attempt ([`ATTEMPT_TIMEOUT`]).
    pub timeout: Duration,
    /// Waits between attempts ([`BACKOFF`]); attempts are one more than its length.
    pub backoff: Vec<Duration>,
    /// Per destination queue ([`QUEUE_CAPACITY`]).
    pub queue: usize,
    /// Per destination requests in flight ([`MAX_IN_FLIGHT`]).
    pub in_flight: usize,
    /// Idle time before a destination's worker stops ([`IDLE_EXIT`]).
    pub idle: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: ATTEMPT_TIMEOUT,
            backoff: BACKOFF.to_vec(),
            queue: QUEUE_CAPACITY,
            in_flight: MAX_IN_FLIGHT,
            idle: IDLE_EXIT,
        }
    }
}

/// Starts delivering `bus`'s events with the default [`Policy`], reading the agents' webhook
/// settings from `config()` (the current configuration) for each event. The deliverer stops
/// when `config()` answers `None` (the gateway is gone; hold it weakly, so the deliverer keeps
/// nothing alive) or the bus is dropped.
///
/// # Errors
/// The HTTP client could not be built (no TLS roots).
pub fn spawn(
    bus: &EventBus,
    config: impl Fn() -> Option<Arc<Config>> + Send + Sync + 'static,
) -> Result<tokio::task::JoinHandle<()>, reqwest::Error> {
    spawn_with(bus, config, Policy::default())
}

/// [`spawn`] with a [`Policy`] of your choice.
///
/// # Errors
/// As [`spawn`].
pub fn spawn_with(
    bus: &EventBus,
    config: impl Fn() -> Option<Arc<Config>> + Send + Sync + 'static,
    policy: Policy,
) -> Result<tokio::task::JoinHandle<()>, reqwest::Error> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(policy.timeout)
        .timeout(policy.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let events = bus.sink(SINK, SINK_CAPACITY);
    let dispatcher = Dispatcher {
        client,
        policy: Arc::new(policy),
        destinations: HashMap::new(),
    };
    Ok(tokio::spawn(dispatcher.run(events, config)))
}

/// One event on its way to one destination.
struct Delivery {
    event: Arc<Event>,
    /// The agent's signing secret when the event left the bus.
    secret: WebhookSecret,
}

/// Sorts the bus's events into their destinations' queues.
struct Dispatcher {
    client: reqwest::Client,
    policy: Arc<Policy>,
    destinations: HashMap<String, Arc<Destination>>,
}

impl Dispatcher {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Arc<Event>>,
        config: impl Fn() -> Option<Arc<Config>>,
    ) {
        while let Some(event) = events.recv().await {
            let Some(agent) = event.agent.as_deref() else {
                continue;
            };
            let Some(config) = config() else {
                return;
            };
            let Some(hook) = config.agent(agent).and_then(|a| a.events.as_ref()) else {
                continue;
            };
            if !hook.wants(event.kind) {
                continue;
            }
            let mut delivery = Delivery {
                event,
                secret: hook.secret.clone(),
            };
            // A worker that stopped when idle refuses the event; a new one takes it.
            loop {
                let destination = self
                    .destinations
                    .entry(hook.url.as_str().to_owned())
                    .or_insert_with(|| {
                        Destination::start(
                            hook.url.clone(),
                            self.client.clone(),
                            Arc::clone(&self.policy),
                        )
                    });
                match destination.push(delivery, self.policy.queue) {
                    Ok(()) => break,
                    Err(refused) => {
                        self.destinations.remove(hook.url.as_str());
                        delivery = refused;
                    }
                }
            }
        }
    }
}

/// One receiver URL: its queue and the worker that empties it.
struct Destination {
    url: reqwest::Url,
    /// The URL as logged: no query string (it may carry a token).
    shown: String,
    queue: Mutex<Queue>,
    /// Wakes the worker: an event was queued.
    queued: Notify,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Delivery>,
    /// The worker has stopped; events go to a new one.
    closed: bool,
    /// Events dropped since the queue last emptied (logged when the first is, and when it
    /// empties).
    dropped: u64,
}

impl Destination {
    fn start(url: reqwest::Url, client: reqwest::Client, policy: Arc<Policy>) -> Arc<Self> {
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let destination = Arc::new(Self {
            url,
            shown: shown.to_string(),
            queue: Mutex::default(),
            queued: Notify::new(),
        });
        tokio::spawn(Arc::clone(&destination).work(client, policy));
        destination
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every step under the lock is one push or pop: a poisoned queue is consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `delivery`, dropping the oldest event when `capacity` are waiting; hands it back
    /// when the worker has stopped.
    fn push(&self, delivery: Delivery, capacity: usize) -> Result<(), Delivery> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(delivery);
            }
            if queue.events.len() >= capacity.max(1) {
                queue.events.pop_front();
                queue.dropped += 1;
                crate::metrics::event_webhook("dropped");
                if queue.dropped == 1 {
                    tracing::warn!(
                        url = %self.shown,
                        capacity,
                        "event webhook queue full (the receiver is slow or down): dropping the oldest events"
                    );
                }
            }
            queue.events.push_back(delivery);
        }
        self.queued.notify_one();
        Ok(())
    }

    /// Delivers the queue, at most `policy.in_flight` at a time and one per call, until idle
    /// for `policy.idle`.
    async fn work(self: Arc<Self>, client: reqwest::Client, policy: Arc<Policy>) {
        let mut running: JoinSet<Result<(), String>> = JoinSet::new();
        // The calls with a request in flight, by the task sending it.
        let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut busy_calls: HashSet<String> = HashSet::new();
        // Events failed since the last one delivered.
        let mut failing = 0u64;
        loop {
            {
                let mut queue = self.lock();
                while running.len() < policy.in_flight.max(1) {
                    let Some(next) = queue
                        .events
                        .iter()
                        .position(|d| !busy_calls.contains(&d.event.call_sid))
                    else {
                        break;
                    };
                    let Some(delivery) = queue.events.remove(next) else {
                        break;
                    };
                    busy_calls.insert(delivery.event.call_sid.clone());
                    let call_sid = delivery.event.call_sid.clone();
                    let (client, url) = (client.clone(), self.url.clone());
                    let policy = Arc::clone(&policy);
                    let task = running
                        .spawn(async move { deliver(&client, url, &delivery, &policy).await });
                    busy.insert(task.id(), call_sid);
                }
                if queue.events.is_empty() && queue.dropped > 0 {
                    tracing::warn!(url = %self.shown, dropped = queue.dropped, "event webhook queue drained; events were dropped while it was full");
                    queue.dropped = 0;
                }
            }
            tokio::select! {
                () = self.queued.notified() => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let (id, result) = match done {
                        Ok((id, result)) => (id, result),
                        Err(e) => (e.id(), Err(format!("delivery task failed: {e}"))),
                    };
                    let call_sid = busy.remove(&id).unwrap_or_default();
                    busy_calls.remove(&call_sid);
                    match result {
                        Ok(()) => {
                            crate::metrics::event_webhook("delivered");
                            if failing > 0 {
                                tracing::info!(url = %self.shown, failed = failing, "event webhook receiver answers again");
                            }
                            failing = 0;
                        }
                        Err(error) => {
                            crate::metrics::event_webhook("failed");
                            if failing == 0 {
                                tracing::warn!(url = %self.shown, %call_sid, %error, "event webhook not delivered (further failures are counted, not logged, until one is)");
                            }
                            failing += 1;
                        }
                    }
                }
                () = tokio::time::sleep(policy.idle), if running.is_empty() => {
                    let mut queue = self.lock();
                    if queue.events.is_empty() {
                        queue.closed = true;
                        return;
                    }
                }
            }
        }
    }
}

/// Every attempt at one delivery; the last error when all failed.
async fn deliver(
    client: &reqwest::Client,
    url: reqwest::Url,
    delivery: &Delivery,
    policy: &Policy,
) -> Result<(), String> {
    let event = &delivery.event;
    let mut waits = policy.backoff.iter();
    loop {
        let timestamp = crate::records::now_ms() / 1000;
        let signature = delivery.secret.sign(&event.id, timestamp, &event.json);
        let sent = client
            .post(url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(event.json.to_string())
            .send()
            .await;
        let error = match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response)
                if response.status().is_server_error()
                    || response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                format!("the receiver answered {}", response.status())
            }
            Ok(response) => {
                return Err(format!(
                    "the receiver answered {} (not retried)",
                    response.status()
                ));
            }
            Err(e) if e.is_timeout() => format!("no answer within {:?}", policy.timeout),
            // Without the URL (its query may carry a token); with the causes (refused, reset).
            Err(e) => {
                let e = e.without_url();
                let mut text = format!("request failed: {e}");
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                text
            }
        };
        let Some(wait) = waits.next() else {
            return Err(error);
        };
        tracing::debug!(event = %event.id, %error, retry_in_ms = wait.as_millis() as u64, "event webhook attempt failed");
        tokio::time::sleep(*wait).await;
    }
}

#[cfg(test)]
mod tests;
