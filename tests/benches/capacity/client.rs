//! The load client: simulated Twilio calls, each client thread carrying its share on one
//! `mio::Poll`.
//!
//! Twilio's media servers are other machines; here the client shares the gateway's two cores,
//! and whatever it costs, or makes the gateway pay, comes off the gateway's share. A client
//! thread that sleeps in `epoll_wait` is woken by every echo the gateway writes while it sleeps,
//! and on this virtual machine waking a thread on the other CPU is paid inside the gateway's
//! `send` (`perf`: a quarter of the gateway's CPU went to `tcp_sendmsg`, half of that to the
//! receiver's wake-up). So a client thread never waits on its sockets: every [`POLL_INTERVAL`] it
//! wakes on its own timer, sends the frames that are due, reads what has arrived with one
//! non-blocking `epoll_wait`, and sleeps again. An echo is timed when it is read, so every round
//! trip includes up to one poll interval of the client's own delay: the figures bound the
//! gateway's from above.
//!
//! Each call opens with a blocking WebSocket handshake (signed as Twilio signs it), sends
//! `connected` and `start`, waits for the shared start time, then sends one `media` frame every
//! 20 ms (real time, staggered over the first frame across all calls), plays what comes back
//! at real time and echoes each mark once the audio before it has played, and ends with `stop`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use switchboard::twilio::signature;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

/// How often a client thread wakes to send what is due and read what has arrived (and so the
/// granularity of its send schedule, as with tokio's 1 ms timer wheel).
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// One frame of audio: 20 ms.
pub const FRAME: Duration = Duration::from_millis(20);

/// A frame sent this far behind its schedule means the client was overloaded; an echo this late
/// after its frame was sent is late (a frame's own length).
pub const LATE: Duration = FRAME;

/// Bytes of the frame tag: the call index (16 bits) and frame number (16 bits), a nibble per byte.
const TAG_BYTES: usize = 8;

/// Longest a handshake may take, and how long a call waits after `stop` for the gateway to close.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's WebSocket read buffer (bytes): a few messages of a few hundred bytes
/// (tungstenite zeroes its whole read buffer, 128 KiB by default, before every read).
const READ_BUFFER: usize = 4096;

/// Readiness events taken per `epoll_wait`; more are read by the next one in the same round.
const EVENTS: usize = 1024;

/// One call to place.
pub struct CallPlan {
    /// Index among the row's calls (tags its frames; sets its phase within the 20 ms frame).
    pub index: usize,
    /// Calls in the row.
    pub n: usize,
    /// Media frames to send.
    pub frames: usize,
    /// `host:port` of the gateway.
    pub address: String,
    /// `ws://…/twilio/media-stream`.
    pub url: String,
    /// The `X-Twilio-Signature` of the upgrade.
    pub signature: String,
    pub call_sid: String,
    pub stream_sid: String,
    pub tone: Arc<[u8; 160]>,
}

/// What one call saw.
#[derive(Default)]
pub struct CallLog {
    pub opened: bool,
    pub completed: bool,
    pub sent: u64,
    pub received: u64,
    pub corrupt: u64,
    /// Marks the gateway sent (each echoed once its audio played).
    pub marks: u64,
    pub late_sends: u64,
    pub max_lag: Duration,
    /// Round trips of echoed frames, µs.
    pub rtt_us: Vec<u32>,
    /// The frame number of each `rtt_us` entry (its send time is `frame × 20 ms` into the media
    /// phase): what the soak's per-minute percentiles group by.
    pub rtt_frame: Vec<u32>,
    pub error: Option<String>,
}

/// Places `plans` from the calling thread: opens them one after another (counting each in
/// `ready`, opened or not), waits for `start` to be set, then runs them to the end. Returns one
/// log per plan.
pub fn run_shard(
    plans: Vec<CallPlan>,
    ready: &AtomicUsize,
    start: &OnceLock<Instant>,
) -> anyhow::Result<Vec<CallLog>> {
    let mut poll = Poll::new().context("creating the client's epoll")?;
    let mut logs = Vec::new();
    let mut calls = Vec::with_capacity(plans.len());
    for plan in plans {
        match open(&plan) {
            Ok(ws) => {
                let token = Token(calls.len());
                poll.registry()
                    .register(
                        &mut SourceFd(&ws.get_ref().as_raw_fd()),
                        token,
                        Interest::READABLE,
                    )
                    .context("registering a call's socket")?;
                let log = CallLog {
                    opened: true,
                    ..CallLog::default()
                };
                calls.push(Call::new(plan, ws, log));
            }
            Err(e) => logs.push(CallLog {
                error: Some(format!("{e:#}")),
                ..CallLog::default()
            }),
        }
        ready.fetch_add(1, Ordering::Release);
    }
    let t0 = loop {
        if let Some(t0) = start.get() {
            break *t0;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    drive(&mut poll, &mut calls, t0)?;
    logs.extend(calls.into_iter().map(|c| c.log));
    Ok(logs)
}

/// Opens one call: TCP (no Nagle), the signed WebSocket upgrade, `connected` and `start`; then
/// switches the socket to non-blocking.
fn open(plan: &CallPlan) -> anyhow::Result<WebSocket<TcpStream>> {
    let stream = TcpStream::connect(&plan.address).context("connecting")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut request = plan.url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert(signature::SIGNATURE_HEADER, plan.signature.parse()?);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) = tungstenite::client::client_with_config(request, stream, Some(config))
        .map_err(|e| anyhow!("WebSocket handshake: {e}"))?;
    ws.send(text(
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.into(),
    ))?;
    ws.send(text(format!(
        r#"{{"event":"start","sequenceNumber":"1","streamSid":"{sid}","start":{{"accountSid":"AC00000000000000000000000000000001","streamSid":"{sid}","callSid":"{call}","tracks":["inbound"],"customParameters":{{}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}}}}"#,
        sid = plan.stream_sid,
        call = plan.call_sid
    )))?;
    ws.get_mut().set_nonblocking(true)?;
    Ok(ws)
}

/// The send schedule and the poll loop, until every call has ended.
fn drive(poll: &mut Poll, calls: &mut [Call], t0: Instant) -> anyhow::Result<()> {
    let mut events = Events::with_capacity(EVENTS);
    let mut scratch = Scratch::default();
    let frames = calls.first().map_or(0, |c| c.plan.frames);
    // The next send: round `round` (frame `round`; the round after the last frame sends `stop`)
    // of `calls[next]`. Calls are in index order, so in order of their phase.
    let (mut round, mut next) = (0usize, 0usize);
    let mut wake = t0;
    loop {
        let now = Instant::now();
        while round <= frames && !calls.is_empty() {
            let call = &mut calls[next];
            let due = t0 + call.offset() + FRAME * round as u32;
            if due > now {
                break;
            }
            if !call.done {
                call.tick(round, due, now, &mut scratch);
            }
            next += 1;
            if next == calls.len() {
                next = 0;
                round += 1;
            }
        }
        loop {
            poll.poll(&mut events, Some(Duration::ZERO))
                .context("polling the client's sockets")?;
            let now = Instant::now();
            for event in events.iter() {
                if let Some(call) = calls.get_mut(event.token().0) {
                    call.read_all(now, &mut scratch);
                }
            }
            if events.iter().count() < EVENTS {
                break;
            }
        }
        let now = Instant::now();
        let closing = round > frames;
        // Every call is visited only to retry a write the socket refused, and once all have
        // sent `stop`, to end them.
        if closing || std::mem::take(&mut scratch.unflushed) {
            let mut live = 0;
            for call in calls.iter_mut().filter(|c| !c.done) {
                if call.unflushed {
                    call.flush(&mut scratch);
                }
                if closing && call.stop_deadline.is_some_and(|d| now >= d) {
                    call.end(None);
                }
                live += usize::from(!call.done);
            }
            if closing && live == 0 {
                return Ok(());
            }
        }
        // Sleep to the next interval boundary (never waiting on the sockets).
        wake = (wake + POLL_INTERVAL).max(now);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
}

/// Buffers reused across calls of a thread.
#[derive(Default)]
struct Scratch {
    message: String,
    payload: String,
    decoded: Vec<u8>,
    /// Some call has bytes its socket did not take yet.
    unflushed: bool,
}

/// An item of the simulated Twilio playback buffer.
enum Queued {
    Frame,
    Mark(String),
}

/// One live call.
struct Call {
    plan: CallPlan,
    ws: Option<WebSocket<TcpStream>>,
    sent_at: Vec<Option<Instant>>,
    echoed: Vec<bool>,
    playback: VecDeque<Queued>,
    seq: u64,
    /// Set once `stop` is sent: when to give up waiting for the gateway to close.
    stop_deadline: Option<Instant>,
    /// Bytes are queued in tungstenite that the socket did not take yet.
    unflushed: bool,
    done: bool,
    log: CallLog,
}

impl Call {
    fn new(plan: CallPlan, ws: WebSocket<TcpStream>, log: CallLog) -> Self {
        Self {
            sent_at: vec![None; plan.frames],
            echoed: vec![false; plan.frames],
            plan,
            ws: Some(ws),
            playback: VecDeque::new(),
            seq: 1,
            stop_deadline: None,
            unflushed: false,
            done: false,
            log,
        }
    }

    /// This call's phase within the frame: starts are spread over the first 20 ms so the calls do
    /// not all send at once.
    fn offset(&self) -> Duration {
        FRAME * self.plan.index as u32 / self.plan.n as u32
    }

    /// Round `round` of the schedule, due at `due`: echoes the marks whose audio has played,
    /// plays the next frame, sends frame `round` (or `stop` after the last).
    fn tick(&mut self, round: usize, due: Instant, now: Instant, s: &mut Scratch) {
        let lag = now.saturating_duration_since(due);
        self.log.max_lag = self.log.max_lag.max(lag);
        if lag > LATE {
            self.log.late_sends += 1;
        }
        let Some(ws) = self.ws.as_mut() else { return };
        let stream_sid = &self.plan.stream_sid;
        // Twilio's buffer: marks whose audio has played are echoed, the next frame starts playing.
        let mut result = Ok(());
        while let Some(Queued::Mark(_)) = self.playback.front() {
            if let Some(Queued::Mark(name)) = self.playback.pop_front() {
                self.seq += 1;
                s.message.clear();
                let _ = write!(
                    s.message,
                    r#"{{"event":"mark","sequenceNumber":"{}","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}"#,
                    self.seq
                );
                result = result.and_then(|()| ws.write(text(s.message.clone())));
            }
        }
        if let Some(Queued::Frame) = self.playback.front() {
            self.playback.pop_front();
        }
        self.seq += 1;
        s.message.clear();
        if round < self.plan.frames {
            let mut frame = *self.plan.tone;
            tag(self.plan.index, round, &mut frame);
            s.payload.clear();
            BASE64.encode_string(frame, &mut s.payload);
            let _ = write!(
                s.message,
                r#"{{"event":"media","sequenceNumber":"{}","streamSid":"{stream_sid}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{}"}}}}"#,
                self.seq,
                round + 1,
                round * 20,
                s.payload
            );
            self.sent_at[round] = Some(Instant::now());
            self.log.sent += 1;
        } else {
            let _ = write!(
                s.message,
                r#"{{"event":"stop","sequenceNumber":"{}","streamSid":"{stream_sid}","stop":{{"accountSid":"AC00000000000000000000000000000001","callSid":"{}"}}}}"#,
                self.seq, self.plan.call_sid
            );
            self.stop_deadline = Some(now + CLOSE_TIMEOUT);
        }
        result = result.and_then(|()| ws.write(text(s.message.clone())));
        match result {
            Ok(()) => self.flush(s),
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                self.unflushed = true;
                s.unflushed = true;
            }
            Err(e) => self.end(Some(format!("sending: {e}"))),
        }
    }

    /// Writes what tungstenite has queued, as far as the socket takes it.
    fn flush(&mut self, s: &mut Scratch) {
        let Some(ws) = self.ws.as_mut() else { return };
        match ws.flush() {
            Ok(()) => self.unflushed = false,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                self.unflushed = true;
                s.unflushed = true;
            }
            Err(e) => self.end(Some(format!("sending: {e}"))),
        }
    }

    /// Reads every message that has arrived, timing echoes at `now`.
    fn read_all(&mut self, now: Instant, s: &mut Scratch) {
        while let Some(ws) = self.ws.as_mut() {
            match ws.read() {
                Ok(Message::Text(t)) => self.on_text(t.as_str(), now, s),
                Ok(Message::Close(_)) => {
                    if self.stop_deadline.is_some() {
                        self.log.completed = true;
                        // Answers the close (best effort), then lets the socket go.
                        let _ = ws.flush();
                        self.end(None);
                    } else {
                        self.end(Some("the gateway closed the call before stop".into()));
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    let error = self
                        .stop_deadline
                        .is_none()
                        .then(|| format!("socket failed during the call: {e}"));
                    self.end(error);
                }
            }
        }
    }

    fn on_text(&mut self, text: &str, now: Instant, s: &mut Scratch) {
        match str_field(text, "\"event\":\"") {
            Some("media") => {
                self.playback.push_back(Queued::Frame);
                let Some(payload) = str_field(text, "\"payload\":\"") else {
                    self.log.corrupt += 1;
                    return;
                };
                s.decoded.clear();
                if BASE64.decode_vec(payload, &mut s.decoded).is_err() {
                    self.log.corrupt += 1;
                    return;
                }
                let decoded = s.decoded.as_slice();
                match untag(decoded) {
                    Some((call, n))
                        if call == self.plan.index
                            && n < self.plan.frames
                            && !self.echoed[n]
                            && decoded[TAG_BYTES..] == self.plan.tone[TAG_BYTES..] =>
                    {
                        self.echoed[n] = true;
                        self.log.received += 1;
                        if let Some(sent) = self.sent_at[n] {
                            let rtt = now.saturating_duration_since(sent);
                            self.log
                                .rtt_us
                                .push(u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX));
                            self.log
                                .rtt_frame
                                .push(u32::try_from(n).unwrap_or(u32::MAX));
                        }
                    }
                    _ => self.log.corrupt += 1,
                }
            }
            Some("mark") => {
                self.log.marks += 1;
                let name = str_field(text, "\"name\":\"").unwrap_or("");
                self.playback.push_back(Queued::Mark(name.to_string()));
            }
            Some("clear") => {
                // The echo plugin never clears; Twilio would return pending marks.
                self.playback.clear();
            }
            _ => self.log.corrupt += 1,
        }
    }

    /// Ends the call (closing its socket), keeping the first error.
    fn end(&mut self, error: Option<String>) {
        self.done = true;
        self.ws = None;
        if self.log.error.is_none() {
            self.log.error = error;
        }
    }
}

fn text(s: String) -> Message {
    Message::Text(s.into())
}

/// The string value after `key` (which ends with the opening quote), up to the closing quote.
/// The gateway's base64 payloads, event names and mark names carry no escapes.
fn str_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(key)? + key.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

/// Writes call `call` and frame `n` into the first [`TAG_BYTES`] as codes 0xE0–0xEF (quiet
/// positive samples), a nibble each.
pub fn tag(call: usize, n: usize, frame: &mut [u8; 160]) {
    let v = ((call as u32 & 0xFFFF) << 16) | (n as u32 & 0xFFFF);
    for (i, b) in frame[..TAG_BYTES].iter_mut().enumerate() {
        *b = 0xE0 | ((v >> (4 * (TAG_BYTES - 1 - i))) & 0xF) as u8;
    }
}

/// The call and frame numbers [`tag`] wrote, if `bytes` is a tagged 20 ms frame.
pub fn untag(bytes: &[u8]) -> Option<(usize, usize)> {
    if bytes.len() != 160 || bytes[..TAG_BYTES].iter().any(|b| b & 0xF0 != 0xE0) {
        return None;
    }
    let v = bytes[..TAG_BYTES]
        .iter()
        .fold(0u32, |v, b| (v << 4) | u32::from(b & 0xF));
    Some(((v >> 16) as usize, (v & 0xFFFF) as usize))
}
