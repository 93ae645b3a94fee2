//! A simulated Twilio: places a call against a running gateway exactly as Twilio would, so the
//! gateway can be tried and tested without a phone.
//!
//! It POSTs the voice webhook (form-encoded, Twilio's parameters), reads the TwiML, opens the
//! `<Connect><Stream>` WebSocket, sends `connected` and `start` (with the `<Parameter>`s as
//! `customParameters`), then streams a WAV as 20 ms μ-law `media` frames at real-time pace. It
//! plays what the gateway sends back at real time, as Twilio's buffer does: `mark`s are echoed
//! when the audio before them has played, and `clear` empties the buffer and echoes every pending
//! mark at once. What the caller heard is kept on the call's timeline for [`write_wav`].
//! Source of the behaviour: <https://www.twilio.com/docs/voice/media-streams/websocket-messages>.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt as _, StreamExt as _};
use quick_xml::events::Event;
use rand::Rng as _;
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::audio::resample::{self, ResampleError};
use crate::audio::{FRAME_MS, FRAME_SAMPLES, TWILIO_SAMPLE_RATE, mulaw};
use crate::twilio::signature;

/// How long the caller stays on the line after the WAV ends, waiting for the reply: the call is
/// ended once nothing audible is queued and, since the WAV ended, no audible (non-silent) audio
/// has arrived for this long.
pub const DEFAULT_IDLE_HANGUP: Duration = Duration::from_secs(2);

/// Longest the caller waits after the WAV ends, whatever is still arriving.
pub const DEFAULT_MAX_TAIL: Duration = Duration::from_secs(60);

/// Most frames Twilio's simulated playback buffer holds (10 minutes); more is a gateway bug.
const MAX_QUEUED_FRAMES: usize = 30_000;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Caller audio: PCM16 mono at 8 kHz (see [`read_wav`]).
    pub audio: Vec<i16>,
    /// Called number (`To`).
    pub to: String,
    /// Caller number (`From`).
    pub from: String,
    /// Extra parameters. With the webhook they go on the Voice URL's query string (as an
    /// operator's routing hints); with `stream_only` they are the `customParameters`.
    pub params: Vec<(String, String)>,
    /// Skip the webhook and open `{url}/twilio/media-stream` directly, as when an operator's own
    /// TwiML opens the stream.
    pub stream_only: bool,
    /// DTMF digits to send, each at an offset from the start of the stream.
    pub dtmf: Vec<(Duration, String)>,
    /// See [`DEFAULT_IDLE_HANGUP`].
    pub idle_hangup: Duration,
    /// See [`DEFAULT_MAX_TAIL`].
    pub max_tail: Duration,
    /// Print a progress line on stderr while the call runs.
    pub progress: bool,
    /// Twilio auth token: when set, the webhook and the WebSocket upgrade carry
    /// `X-Twilio-Signature` computed with it, as Twilio's own requests do.
    pub auth_token: Option<String>,
    /// The `AccountSid` the call comes from; a made-up one when `None`.
    pub account_sid: Option<String>,
    /// The `CallSid`; a made-up one when `None`.
    pub call_sid: Option<String>,
    /// `Direction` sent to the webhook (`inbound`, or `outbound-api` for a call the API placed).
    pub direction: String,
    /// The full webhook URL to POST, instead of `{url}/twilio/voice` with `params` (an outbound
    /// call's `Url`).
    pub voice_url: Option<String>,
    /// Bearer token of the operator API, to read the call's record (transcript) afterwards.
    pub api_token: Option<String>,
}

impl Options {
    /// Options for a call to `url` with `audio`, from and to example numbers.
    pub fn new(url: impl Into<String>, audio: Vec<i16>) -> Self {
        Self {
            url: url.into(),
            audio,
            to: "+15005550006".into(),
            from: "+15005550001".into(),
            params: Vec::new(),
            stream_only: false,
            dtmf: Vec::new(),
            idle_hangup: DEFAULT_IDLE_HANGUP,
            max_tail: DEFAULT_MAX_TAIL,
            progress: false,
            auth_token: None,
            account_sid: None,
            call_sid: None,
            direction: "inbound".into(),
            voice_url: None,
            api_token: None,
        }
    }
}

/// What happened on a simulated call.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The `CallSid` the simulator made up.
    pub call_sid: String,
    /// The `streamSid` the simulator made up.
    pub stream_sid: String,
    /// The TwiML the webhook answered (empty with `stream_only`).
    pub twiml: String,
    /// When the TwiML did not connect a stream: the text it would `<Say>`.
    pub rejected: Option<String>,
    /// The `customParameters` sent in `start`.
    pub parameters: Vec<(String, String)>,
    /// `media` frames sent to the gateway.
    pub frames_sent: u64,
    /// `media` frames received from the gateway.
    pub frames_received: u64,
    /// Marks received, with the sample index on the heard timeline where each was reached
    /// (`None`: cleared before it played, or pending when the call ended).
    pub marks: Vec<(String, Option<usize>)>,
    /// `clear` messages received.
    pub clears: u64,
    /// From the first `media` frame sent to the first audio frame received.
    pub time_to_first_audio: Option<Duration>,
    /// True when the gateway closed the socket (the agent hung up) before the caller did.
    pub closed_by_gateway: bool,
    /// What the gateway received: the caller audio after μ-law, PCM16 at 8 kHz, one sample per
    /// sample of the timeline.
    pub sent: Vec<i16>,
    /// What the caller heard: PCM16 at 8 kHz on the same timeline as `sent` (silence where
    /// nothing played), so sample `i` of both happened at the same moment.
    pub heard: Vec<i16>,
    /// Messages from the gateway that could not be read.
    pub bad_messages: u64,
    /// The conversation as the gateway recorded it (`GET /calls/{sid}` after the call):
    /// (`caller` or `agent`, text). Empty when the gateway had no record.
    pub transcript: Vec<(String, String)>,
}

/// Why a simulated call failed.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The webhook request failed or answered an error status.
    #[error("webhook {url}: {message}")]
    Webhook {
        /// The URL posted to.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The TwiML could not be parsed.
    #[error("TwiML: {0}")]
    Twiml(String),
    /// The WebSocket failed.
    #[error("media stream {url}: {message}")]
    Stream {
        /// The stream URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The WAV file could not be read or written.
    #[error("WAV {path}: {message}")]
    Wav {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Resampling the WAV failed.
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// Reads a WAV file (PCM of 8–32 bits or 32-bit float, any rate, any channel count) as Twilio
/// would carry it: mixed to mono and resampled to 8 kHz PCM16.
///
/// # Errors
/// [`SimulateError::Wav`] when the file cannot be read or is not a supported WAV.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, SimulateError> {
    let wav_err = |message: String| SimulateError::Wav {
        path: path.display().to_string(),
        message,
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| wav_err(e.to_string()))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| wav_err(e.to_string()))?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| wav_err(e.to_string()))?
        }
    };
    let mono: Vec<i16> = samples
        .chunks(channels)
        .map(|c| {
            let avg = c.iter().sum::<f32>() / c.len() as f32;
            (avg * 32767.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    Ok(resample::resample_all(
        &mono,
        spec.sample_rate,
        TWILIO_SAMPLE_RATE,
    )?)
}

/// Writes PCM16 mono at 8 kHz as a WAV file.
///
/// # Errors
/// [`SimulateError::Wav`] when the file cannot be written.
pub fn write_wav(path: &Path, samples: &[i16]) -> Result<(), SimulateError> {
    let wav_err = |e: hound::Error| SimulateError::Wav {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: TWILIO_SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(wav_err)?;
    for s in samples {
        writer.write_sample(*s).map_err(wav_err)?;
    }
    writer.finalize().map_err(wav_err)
}

/// A made-up Twilio SID: two letters and 32 hex digits.
fn sid(prefix: &str) -> String {
    let n: u128 = rand::rng().random();
    format!("{prefix}{n:032x}")
}

/// The stream TwiML asks for: its URL and `<Parameter>`s.
struct StreamTwiml {
    url: String,
    parameters: Vec<(String, String)>,
}

/// Reads `<Connect><Stream url>` and its `<Parameter>`s, or the `<Say>` text when there is none.
fn parse_twiml(xml: &str) -> Result<Result<StreamTwiml, String>, SimulateError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut stream: Option<StreamTwiml> = None;
    let mut said = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| SimulateError::Twiml(e.to_string()))?;
        let (element, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            Event::End(_) => {
                path.pop();
                continue;
            }
            Event::Text(t) if path.last().is_some_and(|p| p == "Say") => {
                said.push_str(&t.xml10_content());
                continue;
            }
            Event::GeneralRef(r) if path.last().is_some_and(|p| p == "Say") => {
                let bad = || SimulateError::Twiml("unknown entity in <Say>".into());
                match r.resolve_char_ref().map_err(|_| bad())? {
                    Some(c) => said.push(c),
                    None => {
                        said.push_str(quick_xml::escape::resolve_xml_entity(r).ok_or_else(bad)?)
                    }
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let Some(e) = element else { continue };
        let name = e.name().as_ref().to_owned();
        let attr = |key: &str| -> Result<Option<String>, SimulateError> {
            for a in e.attributes() {
                let a = a.map_err(|e| SimulateError::Twiml(e.to_string()))?;
                if a.key.as_ref() == key {
                    let v = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| SimulateError::Twiml(e.to_string()))?;
                    return Ok(Some(v.into_owned()));
                }
            }
            Ok(None)
        };
        let parent = path.last().map(String::as_str);
        match (parent, name.as_str()) {
            (Some("Connect"), "Stream") => {
                let url = attr("url")?
                    .ok_or_else(|| SimulateError::Twiml("<Stream> without url".into()))?;
                stream = Some(StreamTwiml {
                    url,
                    parameters: Vec::new(),
                });
            }
            (Some("Stream"), "Parameter") => {
                if let (Some(s), Some(n)) = (&mut stream, attr("name")?) {
                    s.parameters.push((n, attr("value")?.unwrap_or_default()));
                }
            }
            _ => {}
        }
        if !empty {
            path.push(name);
        }
    }
    Ok(stream.ok_or(said))
}

/// One item of Twilio's playback buffer.
enum Queued {
    Audio(Vec<u8>),
    Mark(usize),
}

/// Places one simulated call and returns what happened.
///
/// # Errors
/// The webhook, the TwiML or the stream failed. A call the TwiML does not connect (a `<Say>`
/// and `<Hangup/>`) is not an error: see [`Summary::rejected`].
pub async fn run(opts: Options) -> Result<Summary, SimulateError> {
    let base = opts.url.trim_end_matches('/').to_string();
    let mut summary = Summary {
        call_sid: opts.call_sid.clone().unwrap_or_else(|| sid("CA")),
        stream_sid: sid("MZ"),
        ..Summary::default()
    };
    let account_sid = opts.account_sid.clone().unwrap_or_else(|| sid("AC"));
    let stream_url = if opts.stream_only {
        summary.parameters = opts.params.clone();
        summary.parameters.push(("From".into(), opts.from.clone()));
        summary.parameters.push(("To".into(), opts.to.clone()));
        crate::twilio::webhook::media_stream_url(&base)
    } else {
        let mut url = format!("{base}/twilio/voice");
        if let Some(voice_url) = &opts.voice_url {
            url.clone_from(voice_url);
        } else if !opts.params.is_empty() {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&opts.params)
                .finish();
            url = format!("{url}?{query}");
        }
        let form = [
            ("CallSid", summary.call_sid.as_str()),
            ("AccountSid", account_sid.as_str()),
            ("From", opts.from.as_str()),
            ("To", opts.to.as_str()),
            ("Caller", opts.from.as_str()),
            ("Called", opts.to.as_str()),
            ("CallStatus", "ringing"),
            ("Direction", opts.direction.as_str()),
            ("ApiVersion", "2010-04-01"),
        ];
        let webhook_err = |message: String| SimulateError::Webhook {
            url: url.clone(),
            message,
        };
        let mut request = reqwest::Client::new().post(&url).form(&form);
        if let Some(token) = &opts.auth_token {
            let params: Vec<(String, String)> = form
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let signature =
                signature::compute(token, &url, &params, signature::Algorithm::HmacSha1);
            request = request.header(signature::SIGNATURE_HEADER, signature);
        }
        let response = request
            .send()
            .await
            .map_err(|e| webhook_err(e.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| webhook_err(e.to_string()))?;
        if !status.is_success() {
            return Err(webhook_err(format!("HTTP {status}: {body}")));
        }
        summary.twiml = body;
        match parse_twiml(&summary.twiml)? {
            Ok(stream) => {
                summary.parameters = stream.parameters;
                stream.url
            }
            Err(said) => {
                summary.rejected = Some(said);
                return Ok(summary);
            }
        }
    };
    stream(&opts, &stream_url, &account_sid, &mut summary).await?;
    summary.transcript =
        fetch_transcript(&base, &summary.call_sid, opts.api_token.as_deref()).await;
    Ok(summary)
}

/// The gateway's record of the call (it lands just after the socket closes): the transcript
/// turns, or nothing when there is no API token or the gateway has no finished record within
/// 3 s.
async fn fetch_transcript(
    base: &str,
    call_sid: &str,
    api_token: Option<&str>,
) -> Vec<(String, String)> {
    let Some(api_token) = api_token else {
        return Vec::new();
    };
    let url = format!("{base}/calls/{call_sid}");
    let client = reqwest::Client::new();
    for _ in 0..30 {
        if let Ok(response) = client.get(&url).bearer_auth(api_token).send().await
            && response.status().is_success()
            && let Ok(body) = response.text().await
            && let Ok(record) = serde_json::from_str::<serde_json::Value>(&body)
            && record["ended_at_ms"].is_i64()
        {
            return record["transcript"]
                .as_array()
                .map(|turns| {
                    turns
                        .iter()
                        .map(|t| {
                            (
                                t["side"].as_str().unwrap_or("?").to_string(),
                                t["text"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

async fn stream(
    opts: &Options,
    url: &str,
    account_sid: &str,
    summary: &mut Summary,
) -> Result<(), SimulateError> {
    let stream_err = |message: String| SimulateError::Stream {
        url: url.to_string(),
        message,
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| stream_err(e.to_string()))?;
    if let Some(token) = &opts.auth_token {
        let signature = signature::compute(token, url, &[], signature::Algorithm::HmacSha1);
        let value = signature
            .parse()
            .map_err(|_| stream_err("signature is not a header value".into()))?;
        request
            .headers_mut()
            .insert(signature::SIGNATURE_HEADER, value);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| stream_err(e.to_string()))?;
    let custom: serde_json::Map<String, serde_json::Value> = summary
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let sid = summary.stream_sid.clone();
    let mut seq: u64 = 1;
    let opening = [
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json!({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
            "accountSid": account_sid, "streamSid": sid, "callSid": summary.call_sid,
            "tracks": ["inbound"], "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
    ];
    for msg in opening {
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| stream_err(e.to_string()))?;
    }

    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut dtmf: VecDeque<(Duration, String)> = opts.dtmf.iter().cloned().collect();
    dtmf.make_contiguous().sort_by_key(|(t, _)| *t);
    let frames_total = opts.audio.len().div_ceil(FRAME_SAMPLES);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(FRAME_MS));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut chunk: u64 = 0;
    let mut last_audio_in = Instant::now();
    let mut last_progress = Instant::now();
    let mut frame = Vec::with_capacity(FRAME_SAMPLES);

    'call: loop {
        tokio::select! {
            _ = ticker.tick() => {
                // One 20 ms tick: the caller speaks one frame and hears one frame.
                let i = chunk as usize;
                if i == frames_total {
                    // The caller has finished speaking: give the agent time to answer.
                    last_audio_in = Instant::now();
                }
                let audible_queued = queue.iter().any(|q| matches!(q, Queued::Audio(a) if audible(a)));
                if i >= frames_total && !audible_queued && last_audio_in.elapsed() >= opts.idle_hangup {
                    break 'call;
                }
                if i >= frames_total && started.elapsed() > audio_duration(frames_total) + opts.max_tail {
                    break 'call;
                }
                frame.clear();
                let lo = (i * FRAME_SAMPLES).min(opts.audio.len());
                let hi = ((i + 1) * FRAME_SAMPLES).min(opts.audio.len());
                mulaw::encode_into(&opts.audio[lo..hi], &mut frame);
                frame.resize(FRAME_SAMPLES, mulaw::SILENCE);
                seq += 1;
                chunk += 1;
                let msg = json!({"event": "media", "sequenceNumber": seq.to_string(), "streamSid": sid,
                    "media": {"track": "inbound", "chunk": chunk.to_string(),
                              "timestamp": ((chunk - 1) * FRAME_MS).to_string(),
                              "payload": BASE64.encode(&frame)}});
                if ws.send(Message::Text(msg.to_string().into())).await.is_err() {
                    summary.closed_by_gateway = true;
                    break 'call;
                }
                summary.frames_sent += 1;
                mulaw::decode_into(&frame, &mut summary.sent);
                while dtmf.front().is_some_and(|(t, _)| *t <= started.elapsed()) {
                    if let Some((_, digit)) = dtmf.pop_front() {
                        seq += 1;
                        let msg = json!({"event": "dtmf", "sequenceNumber": seq.to_string(), "streamSid": sid,
                            "dtmf": {"track": "inbound_track", "digit": digit}});
                        if ws.send(Message::Text(msg.to_string().into())).await.is_err() {
                            summary.closed_by_gateway = true;
                            break 'call;
                        }
                    }
                }
                // Play one frame; echo the marks it reaches.
                let mut played = false;
                while let Some(item) = queue.pop_front() {
                    match item {
                        Queued::Mark(m) => {
                            summary.marks[m].1 = Some(summary.heard.len());
                            seq += 1;
                            let name = summary.marks[m].0.clone();
                            let msg = json!({"event": "mark", "sequenceNumber": seq.to_string(),
                                "streamSid": sid, "mark": {"name": name}});
                            if ws.send(Message::Text(msg.to_string().into())).await.is_err() {
                                summary.closed_by_gateway = true;
                                break 'call;
                            }
                        }
                        Queued::Audio(a) if !played => {
                            mulaw::decode_into(&a, &mut summary.heard);
                            played = true;
                        }
                        Queued::Audio(a) => {
                            queue.push_front(Queued::Audio(a));
                            break;
                        }
                    }
                }
                if !played {
                    summary.heard.resize(summary.heard.len() + FRAME_SAMPLES, 0);
                }
                if opts.progress && last_progress.elapsed() >= Duration::from_millis(500) {
                    last_progress = Instant::now();
                    progress_line(started.elapsed(), summary);
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    None | Some(Err(_)) => { summary.closed_by_gateway = true; break 'call; }
                    Some(Ok(Message::Close(_))) => { summary.closed_by_gateway = true; break 'call; }
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                    summary.bad_messages += 1;
                    continue;
                };
                if v["streamSid"] != json!(sid) {
                    summary.bad_messages += 1;
                    continue;
                }
                match v["event"].as_str() {
                    Some("media") => {
                        let Some(audio) = v["media"]["payload"].as_str().and_then(|p| BASE64.decode(p).ok()) else {
                            summary.bad_messages += 1;
                            continue;
                        };
                        if summary.time_to_first_audio.is_none() {
                            summary.time_to_first_audio = Some(started.elapsed());
                        }
                        summary.frames_received += 1;
                        // Silence keeps no caller on the line: only audible audio counts.
                        if audible(&audio) {
                            last_audio_in = Instant::now();
                        }
                        if queue.len() >= MAX_QUEUED_FRAMES {
                            return Err(stream_err("gateway queued more than 10 minutes of audio".into()));
                        }
                        queue.push_back(Queued::Audio(audio));
                    }
                    Some("mark") => {
                        let name = v["mark"]["name"].as_str().unwrap_or_default().to_string();
                        summary.marks.push((name, None));
                        queue.push_back(Queued::Mark(summary.marks.len() - 1));
                    }
                    Some("clear") => {
                        summary.clears += 1;
                        // Twilio empties its buffer and returns every pending mark at once.
                        for item in queue.drain(..) {
                            if let Queued::Mark(m) = item {
                                seq += 1;
                                let msg = json!({"event": "mark", "sequenceNumber": seq.to_string(),
                                    "streamSid": sid, "mark": {"name": summary.marks[m].0}});
                                if ws.send(Message::Text(msg.to_string().into())).await.is_err() {
                                    summary.closed_by_gateway = true;
                                    break 'call;
                                }
                            }
                        }
                    }
                    _ => summary.bad_messages += 1,
                }
            }
        }
    }
    if !summary.closed_by_gateway {
        seq += 1;
        let msg = json!({"event": "stop", "sequenceNumber": seq.to_string(), "streamSid": sid,
            "stop": {"accountSid": account_sid, "callSid": summary.call_sid}});
        // The gateway may already be gone; the stop is best effort, like Twilio's.
        let _ = ws.send(Message::Text(msg.to_string().into())).await;
        // Wait for the gateway to close its side.
        let closing = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        });
        let _ = closing.await;
    }
    if opts.progress {
        progress_line(started.elapsed(), summary);
        eprintln!();
    }
    Ok(())
}

/// True when a μ-law frame holds anything but digital silence (0xFF, or 0x7F: negative zero).
fn audible(mulaw_frame: &[u8]) -> bool {
    mulaw_frame
        .iter()
        .any(|b| *b != mulaw::SILENCE && *b != 0x7F)
}

fn audio_duration(frames: usize) -> Duration {
    Duration::from_millis(frames as u64 * FRAME_MS)
}

fn progress_line(elapsed: Duration, s: &Summary) {
    let reached = s.marks.iter().filter(|(_, at)| at.is_some()).count();
    eprint!(
        "\r[{:6.1} s] sent {} frames · heard {} frames · marks {}/{} · clears {}   ",
        elapsed.as_secs_f64(),
        s.frames_sent,
        s.frames_received,
        reached,
        s.marks.len(),
        s.clears
    );
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_connect_stream_twiml() {
        let xml = crate::twiml::connect_stream(
            "ws://127.0.0.1:1/twilio/media-stream",
            &[("agent".into(), "a&b \"q\"".into())],
        )
        .to_xml();
        let stream = parse_twiml(&xml).expect("parses").expect("stream");
        assert_eq!(stream.url, "ws://127.0.0.1:1/twilio/media-stream");
        assert_eq!(
            stream.parameters,
            vec![("agent".into(), "a&b \"q\"".into())]
        );
    }

    #[test]
    fn reads_say_when_not_connected() {
        let xml = crate::twiml::Response::new()
            .say(crate::twiml::Say::new("Not <configured> & bye"))
            .hangup()
            .to_xml();
        let said = parse_twiml(&xml).expect("parses").err().expect("no stream");
        assert_eq!(said, "Not <configured> & bye");
    }
}
