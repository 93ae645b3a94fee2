//! A phone on Twilio's side of a Media Streams socket, precise enough to check the playback
//! clock: it sends the caller's 20 ms frames at real time, plays what the gateway sends at real
//! time (one frame per 20 ms, as Twilio's buffer does), echoes each mark when the audio before it
//! has played, and on `clear` drops its buffer and returns pending marks at once — recording, for
//! every `clear`, when it came and how many ms of the reply being played the caller heard.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// One `clear` as the phone saw it.
#[derive(Debug, Clone)]
pub struct Clear {
    /// When it arrived.
    pub at: Instant,
    /// Ms of the reply then playing that the caller had heard (frames played × 20).
    pub heard_ms: u64,
}

/// What happened on the call.
#[derive(Debug, Default, Clone)]
pub struct PhoneLog {
    /// When `start` was sent.
    pub started: Option<Instant>,
    /// When the first media frame arrived.
    pub first_media: Option<Instant>,
    /// Every media payload received, in order, with its arrival time.
    pub media: Vec<(Instant, Vec<u8>)>,
    /// Every `clear`.
    pub clears: Vec<Clear>,
    /// Marks echoed after playing / returned by a clear.
    pub marks_played: Vec<String>,
    /// Marks returned unplayed by a clear.
    pub marks_cleared: Vec<String>,
    /// The gateway closed the socket.
    pub closed_by_gateway: bool,
    /// When each caller frame was sent, in order.
    pub sent_at: Vec<Instant>,
}

enum Queued {
    Frame(Vec<u8>),
    Mark(String),
}

/// The line's echo: what the phone plays comes back into the caller's audio `delay_ms` later,
/// `level_db` below what was played (line hybrid or speakerphone echo).
#[derive(Debug, Clone, Copy)]
pub struct EchoPath {
    /// Echo delay (ms).
    pub delay_ms: u64,
    /// Echo level relative to the played audio (dB, negative: −20 is a tenth of the amplitude).
    pub level_db: f64,
}

/// How the phone behaves beyond the caller's script.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Feed what it plays back into the caller's audio.
    pub echo: Option<EchoPath>,
}

/// Places one call on `gateway_url` (`http://…`) with these `customParameters`, sends `script`
/// (20 ms frames of μ-law, then silence) for `duration`, then `stop`.
///
/// # Errors
/// The socket failed.
pub async fn call(
    gateway_url: &str,
    params: Value,
    script: Vec<Vec<u8>>,
    duration: Duration,
) -> anyhow::Result<PhoneLog> {
    call_with(
        gateway_url,
        params,
        script,
        duration,
        CallOptions::default(),
    )
    .await
}

/// [`call`], with the line's behaviour in `options` (its echo).
///
/// # Errors
/// The socket failed.
pub async fn call_with(
    gateway_url: &str,
    params: Value,
    script: Vec<Vec<u8>>,
    duration: Duration,
    options: CallOptions,
) -> anyhow::Result<PhoneLog> {
    let url = format!(
        "{}/twilio/media-stream",
        gateway_url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    ))
    .await?;
    ws.send(send(
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
        "start": {"accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
    ))
    .await?;
    let mut log = PhoneLog {
        started: Some(Instant::now()),
        ..PhoneLog::default()
    };
    let end = Instant::now() + duration;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut chunk, mut seq) = (0u64, 1u64);
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut reply_played = 0u64;
    let mut script = script.into_iter();
    // Everything the phone played, one frame (or a frame of silence) per tick, as PCM16.
    let mut played_pcm: Vec<i16> = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end {
                    seq += 1;
                    ws.send(send(json!({"event": "stop", "sequenceNumber": seq.to_string(), "streamSid": "MZ1",
                        "stop": {"accountSid": "AC1", "callSid": "CA1"}}))).await?;
                    // Drain until the gateway closes.
                    let _ = tokio::time::timeout(Duration::from_secs(3), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    }).await;
                    return Ok(log);
                }
                let mut frame = script.next().unwrap_or_else(|| vec![0xFF; 160]);
                if let Some(echo) = options.echo {
                    // This frame was captured over the last tick; the echo in it left the
                    // loudspeaker `delay` earlier.
                    let gain = 10f64.powf(echo.level_db / 20.0);
                    let delay = (echo.delay_ms * 8) as usize;
                    let end = played_pcm.len();
                    frame = frame
                        .iter()
                        .enumerate()
                        .map(|(i, &b)| {
                            let at = (end + i).checked_sub(160 + delay);
                            let echoed = at.and_then(|a| played_pcm.get(a)).map_or(0.0, |&p| f64::from(p) * gain);
                            let mixed = f64::from(switchboard::audio::mulaw::decode(b)) + echoed;
                            switchboard::audio::mulaw::encode(mixed.round().clamp(-32768.0, 32767.0) as i16)
                        })
                        .collect();
                }
                chunk += 1;
                seq += 1;
                ws.send(send(json!({"event": "media", "sequenceNumber": seq.to_string(), "streamSid": "MZ1",
                    "media": {"track": "inbound", "chunk": chunk.to_string(),
                        "timestamp": (chunk * 20).to_string(), "payload": BASE64.encode(&frame)}}))).await?;
                log.sent_at.push(Instant::now());
                // Play one frame; echo the marks it reaches.
                let mut played = false;
                let mut sound = None;
                while let Some(item) = queue.pop_front() {
                    match item {
                        Queued::Mark(name) => {
                            seq += 1;
                            ws.send(send(json!({"event": "mark", "sequenceNumber": seq.to_string(),
                                "streamSid": "MZ1", "mark": {"name": name}}))).await?;
                            log.marks_played.push(name);
                        }
                        Queued::Frame(payload) if !played => {
                            played = true;
                            reply_played += 1;
                            sound = Some(payload);
                        }
                        Queued::Frame(payload) => {
                            queue.push_front(Queued::Frame(payload));
                            break;
                        }
                    }
                }
                if options.echo.is_some() {
                    match sound {
                        Some(payload) => played_pcm.extend(payload.iter().map(|&b| switchboard::audio::mulaw::decode(b))),
                        None => played_pcm.extend([0i16; 160]),
                    }
                }
                if !played && queue.is_empty() {
                    reply_played = 0; // idle: the next audio is a new reply
                }
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    log.closed_by_gateway = true;
                    return Ok(log);
                };
                if let Message::Close(_) = msg {
                    // The gateway ended the call: Twilio stops sending (tungstenite refuses to
                    // send after a close anyway). Reading on answers the close and sees the end.
                    log.closed_by_gateway = true;
                    let _ = tokio::time::timeout(Duration::from_secs(3), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    }).await;
                    return Ok(log);
                }
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(text.as_str())?;
                match v["event"].as_str() {
                    Some("media") => {
                        let now = Instant::now();
                        log.first_media.get_or_insert(now);
                        let payload = BASE64.decode(v["media"]["payload"].as_str().unwrap_or_default())?;
                        log.media.push((now, payload.clone()));
                        queue.push_back(Queued::Frame(payload));
                    }
                    Some("mark") => {
                        queue.push_back(Queued::Mark(v["mark"]["name"].as_str().unwrap_or_default().to_string()));
                    }
                    Some("clear") => {
                        log.clears.push(Clear { at: Instant::now(), heard_ms: reply_played * 20 });
                        for item in queue.drain(..) {
                            if let Queued::Mark(name) = item {
                                seq += 1;
                                ws.send(send(json!({"event": "mark", "sequenceNumber": seq.to_string(),
                                    "streamSid": "MZ1", "mark": {"name": name}}))).await?;
                                log.marks_cleared.push(name);
                            }
                        }
                        reply_played = 0;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// `ms` of a loud 300 Hz tone whose level rises and falls 20 dB four times a second, as
/// syllables do, as 20 ms μ-law frames: a caller talking, to a VAD (which takes a steady tone
/// for noise once it has lasted).
pub fn speech(ms: u64) -> Vec<Vec<u8>> {
    let frames = ms / 20;
    (0..frames)
        .map(|f| {
            (0..160)
                .map(|i| {
                    let t = (f * 160 + i) as f64 / 8000.0;
                    let syllables = 0.55 - 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).cos();
                    switchboard::audio::mulaw::encode(
                        (12000.0 * syllables * (2.0 * std::f64::consts::PI * 300.0 * t).sin())
                            as i16,
                    )
                })
                .collect()
        })
        .collect()
}

/// `ms` of silence as 20 ms μ-law frames.
pub fn silence(ms: u64) -> Vec<Vec<u8>> {
    vec![vec![0xFF; 160]; (ms / 20) as usize]
}

/// An 8 kHz PCM16 WAV file as 20 ms μ-law frames (the last one padded with silence): a caller
/// saying something, as Twilio would carry it.
///
/// # Errors
/// The file could not be read, or is not 8 kHz mono.
pub fn wav_frames(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let pcm = switchboard::simulate::read_wav(path)?;
    Ok(pcm
        .chunks(160)
        .map(|c| {
            let mut frame: Vec<u8> = c
                .iter()
                .map(|&s| switchboard::audio::mulaw::encode(s))
                .collect();
            frame.resize(160, 0xFF);
            frame
        })
        .collect())
}
