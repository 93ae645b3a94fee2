//! The plugin test kit (feature `testing`): drive one session of a plugin from a WAV file, from
//! samples, or from a recorded list of inputs, and assert on its outputs — no gateway, no
//! sockets, no Twilio.
//!
//! The harness calls your [`Realtime`] implementation directly, the way the host does through
//! either build: `describe`, then `open` with a [`SessionConfig`] like the host's, then one
//! `handle` per input, with caller audio cut into 20 ms frames in the format `describe` asked
//! for. Use it from your plugin's unit tests:
//!
//! ```
//! # use switchboard_plugin_api::prelude::*;
//! # struct Loopback;
//! # impl Realtime for Loopback {
//! #     fn describe() -> PluginInfo { PluginInfo { name: "loopback".into(), version: "0".into(),
//! #         description: String::new(),
//! #         input_format: AudioFormat { encoding: AudioEncoding::Pcm16, sample_rate: 8000 } } }
//! #     fn open(_: SessionConfig) -> Result<Self, PluginError> { Ok(Loopback) }
//! #     fn handle(&mut self, i: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
//! #         Ok(match i { SessionInput::Audio(f) => vec![SessionOutput::Play(f)], _ => vec![] }) }
//! # }
//! use switchboard_plugin_api::testing::{Harness, played_samples};
//!
//! let mut call = Harness::<Loopback>::open("{}").unwrap();
//! let tone: Vec<i16> = (0..1600).map(|i| ((i % 40) * 400 - 8000) as i16).collect();
//! let outputs = call.speak(&tone).unwrap();
//! assert_eq!(played_samples(&outputs), tone);
//! ```
//!
//! A recorded list of inputs is a JSON array (or one JSON value per line) of
//! [`SessionInput`]s in serde's externally tagged form, e.g.
//! `[{"Dtmf": "1"}, {"MarkPlayed": "greeting"}, "Hangup"]`; see [`load_recording`].
//!
//! Host I/O: a harness stands in for the host. `host::secret` answers from
//! [`Harness::with_secret`]; `ws_connect`, `http_send` and `set_timer` succeed with fresh handles
//! and, like every other I/O call, are recorded for [`Harness::take_host_calls`]; feed the replies
//! back with [`Harness::send`]`(SessionInput::Io(…))`. No network is touched and `allowed_hosts`
//! is not checked (the gateway does that). The stand-in is per thread: keep a harness on the
//! thread that made it.

// The test kit stands in for the host through the native ABI, as the host's loader does.
#![allow(unsafe_code)]
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use crate::Realtime;
use crate::audio::{mulaw_decode, mulaw_encode, pcm16_from_bytes, pcm16_to_bytes};
use crate::stage::Stage;
use crate::types::{
    AudioEncoding, AudioFormat, AudioFrame, CallInfo, PluginError, SessionConfig, SessionInput,
    SessionOutput,
};

/// One frame of caller audio: 20 ms, as Twilio sends it.
pub const FRAME_MS: u64 = 20;

/// Why the test kit could not do what was asked.
#[derive(Debug)]
pub enum TestKitError {
    /// The plugin returned an error.
    Plugin(PluginError),
    /// A file could not be read or parsed; the message names it.
    Input(String),
}

impl std::fmt::Display for TestKitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plugin(e) => write!(f, "plugin error: {e:?}"),
            Self::Input(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for TestKitError {}

impl From<PluginError> for TestKitError {
    fn from(e: PluginError) -> Self {
        Self::Plugin(e)
    }
}

pub use crate::abi::HostCall;

/// The stand-in host of this thread's harness.
#[derive(Default)]
struct TestHost {
    secrets: BTreeMap<String, String>,
    calls: Vec<HostCall>,
    next_handle: u32,
}

thread_local! {
    static TEST_HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

mod stand_in {
    //! The `HostApi` the harness installs: answers from the thread's [`super::TestHost`].

    use super::{HostCall, TEST_HOST};
    use crate::abi::{ABI_VERSION, Buffer, HostApi, HostReply, Str, decode, encode, status};

    pub(super) static API: HostApi = HostApi {
        abi_version: ABI_VERSION,
        size: size_of::<HostApi>() as u32,
        log,
        now_ms,
        io,
        free,
    };

    unsafe extern "C" fn log(level: u32, message: Str) {
        // SAFETY: the plugin passes a live string for the duration of the call.
        eprintln!("[plugin log {level}] {}", unsafe {
            message.to_string_lossy()
        });
    }

    unsafe extern "C" fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    unsafe extern "C" fn io(call: *const u8, len: usize, out: *mut Buffer) -> i32 {
        // SAFETY: the plugin passes `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(call, len) };
        let (code, reply) = match decode::<HostCall>(bytes) {
            Ok(call) => {
                let reply = TEST_HOST.with(|h| {
                    let mut host = h.borrow_mut();
                    let reply = match &call {
                        HostCall::Secret(name) => {
                            HostReply::Secret(host.secrets.get(name).cloned())
                        }
                        HostCall::WsConnect { .. }
                        | HostCall::HttpSend(_)
                        | HostCall::SetTimer(_) => {
                            host.next_handle += 1;
                            HostReply::Handle(Ok(host.next_handle))
                        }
                        _ => HostReply::Done(Ok(())),
                    };
                    host.calls.push(call);
                    reply
                });
                (status::OK, encode(&reply))
            }
            Err(e) => (status::BAD_INPUT, e.to_string().into_bytes()),
        };
        // SAFETY: the plugin passes a writable buffer and gives it back to `free`.
        unsafe { out.write(Buffer::from_vec(reply)) };
        code
    }

    unsafe extern "C" fn free(buffer: Buffer) {
        if !buffer.ptr.is_null() && buffer.cap != 0 {
            // SAFETY: allocated by `Buffer::from_vec` in `io`.
            drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
        }
    }
}

/// A config like the host's: a made-up call to agent `test` with these settings (a JSON object,
/// as the agent's `realtime.settings` in agents.toml) and this input format.
pub fn config_for(settings: &str, input_format: AudioFormat) -> SessionConfig {
    SessionConfig {
        call: CallInfo {
            call_sid: "CA00000000000000000000000000000000".into(),
            stream_sid: "MZ00000000000000000000000000000000".into(),
            from: "+15005550006".into(),
            to: "+15005550001".into(),
            direction: "inbound".into(),
            agent: "test".into(),
            parameters: Vec::new(),
        },
        settings: settings.into(),
        greeting: None,
        input_format,
    }
}

/// Grants the secret `name` to sessions opened on this thread from now on.
pub fn grant_secret(name: &str, value: &str) {
    TEST_HOST.with(|h| {
        h.borrow_mut()
            .secrets
            .insert(name.to_string(), value.to_string())
    });
}

/// Takes the host calls (I/O, secrets) plugins made on this thread so far, in order.
pub fn take_host_calls() -> Vec<HostCall> {
    TEST_HOST.with(|h| std::mem::take(&mut h.borrow_mut().calls))
}

/// A session of any stage (`S` is `stage::AsStt<MyStt>`, `AsLlm<…>`, `AsTts<…>`); for realtime
/// plugins [`Harness`] adds audio helpers.
pub struct StageHarness<S: Stage> {
    session: S,
}

impl<S: Stage> StageHarness<S> {
    /// Opens a session with [`config_for`]`(settings, <S as Stage>::describe().input_format)`.
    ///
    /// # Errors
    /// The plugin refused to open.
    pub fn open(settings: &str) -> Result<Self, PluginError> {
        Self::open_with(config_for(settings, S::describe().input_format))
    }

    /// Opens a session with a config of your own.
    ///
    /// # Errors
    /// The plugin refused to open.
    pub fn open_with(config: SessionConfig) -> Result<Self, PluginError> {
        // SAFETY: a static table that lives for the process.
        unsafe { crate::abi::glue::install_host(&stand_in::API) };
        Ok(Self {
            session: S::open(config)?,
        })
    }

    /// Feeds one input as the host would and returns its outputs.
    ///
    /// # Errors
    /// The plugin returned an error.
    pub fn send(&mut self, input: S::Input) -> Result<Vec<S::Output>, PluginError> {
        self.session.handle(input)
    }
}

/// A session of plugin `T` on a simulated call.
pub struct Harness<T: Realtime> {
    session: T,
    input_format: AudioFormat,
    /// Stream time of the next caller frame (ms).
    clock_ms: u64,
}

impl<T: Realtime> Harness<T> {
    /// A config like the host's: a made-up call to agent `test` with these settings (a JSON
    /// object, as the agent's `realtime.settings` in agents.toml) and the input format `T`
    /// describes.
    pub fn config(settings: &str) -> SessionConfig {
        config_for(settings, T::describe().input_format)
    }

    /// Opens a session with [`Harness::config`]`(settings)`.
    ///
    /// # Errors
    /// The plugin refused to open.
    pub fn open(settings: &str) -> Result<Self, PluginError> {
        Self::open_with(Self::config(settings))
    }

    /// Opens a session with a config of your own (a greeting, custom parameters…).
    ///
    /// # Errors
    /// The plugin refused to open.
    pub fn open_with(config: SessionConfig) -> Result<Self, PluginError> {
        // SAFETY: a static table that lives for the process.
        unsafe { crate::abi::glue::install_host(&stand_in::API) };
        let input_format = config.input_format;
        Ok(Self {
            session: T::open(config)?,
            input_format,
            clock_ms: 0,
        })
    }

    /// Grants the secret `name` to sessions opened on this thread from now on (call before
    /// [`Harness::open`]).
    pub fn with_secret(name: &str, value: &str) {
        grant_secret(name, value);
    }

    /// Takes the host calls (I/O, secrets) the plugin made on this thread so far, in order.
    pub fn take_host_calls(&self) -> Vec<HostCall> {
        take_host_calls()
    }

    /// The caller-audio format the session receives.
    pub fn input_format(&self) -> AudioFormat {
        self.input_format
    }

    /// Feeds one input as the host would and returns its outputs.
    ///
    /// # Errors
    /// The plugin returned an error.
    pub fn send(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        self.session.handle(input)
    }

    /// Feeds a list of inputs in order (a recording, say) and returns all their outputs.
    ///
    /// # Errors
    /// The first error the plugin returned.
    pub fn replay(
        &mut self,
        inputs: impl IntoIterator<Item = SessionInput>,
    ) -> Result<Vec<SessionOutput>, PluginError> {
        let mut outputs = Vec::new();
        for input in inputs {
            outputs.extend(self.send(input)?);
        }
        Ok(outputs)
    }

    /// The caller speaks: `samples` (PCM16 at the session's input sample rate) go in as 20 ms
    /// frames in the session's input encoding; a last partial frame is padded with silence.
    /// Returns every output, in order.
    ///
    /// # Errors
    /// The plugin returned an error.
    pub fn speak(&mut self, samples: &[i16]) -> Result<Vec<SessionOutput>, PluginError> {
        let per_frame = (self.input_format.sample_rate as u64 * FRAME_MS / 1000) as usize;
        let mut outputs = Vec::new();
        for chunk in samples.chunks(per_frame.max(1)) {
            let mut frame = chunk.to_vec();
            frame.resize(per_frame, 0);
            let data = match self.input_format.encoding {
                AudioEncoding::Pcm16 => pcm16_to_bytes(&frame),
                AudioEncoding::Mulaw => frame.iter().map(|s| mulaw_encode(*s)).collect(),
            };
            let input = SessionInput::Audio(AudioFrame {
                format: self.input_format,
                data,
                timestamp_ms: self.clock_ms,
            });
            self.clock_ms += FRAME_MS;
            outputs.extend(self.send(input)?);
        }
        Ok(outputs)
    }

    /// The caller is silent for `ms` milliseconds (whole frames).
    ///
    /// # Errors
    /// The plugin returned an error.
    pub fn silence(&mut self, ms: u64) -> Result<Vec<SessionOutput>, PluginError> {
        let samples = (self.input_format.sample_rate as u64 * ms / 1000) as usize;
        self.speak(&vec![0; samples])
    }

    /// The caller speaks the WAV file at `path` (mono, 16-bit, at the session's input sample
    /// rate; convert others with e.g. `sox in.wav -r 8000 -c 1 -b 16 out.wav`).
    ///
    /// # Errors
    /// The file is unreadable or in another format, or the plugin returned an error.
    pub fn speak_wav(
        &mut self,
        path: impl AsRef<Path>,
    ) -> Result<Vec<SessionOutput>, TestKitError> {
        let samples = read_wav(path.as_ref(), self.input_format.sample_rate)?;
        Ok(self.speak(&samples)?)
    }

    /// The caller presses a DTMF key.
    ///
    /// # Errors
    /// The plugin returned an error.
    pub fn dtmf(&mut self, digit: &str) -> Result<Vec<SessionOutput>, PluginError> {
        self.send(SessionInput::Dtmf(digit.into()))
    }

    /// The call ends; the session is dropped after its last input.
    ///
    /// # Errors
    /// The plugin returned an error.
    pub fn hang_up(mut self) -> Result<Vec<SessionOutput>, PluginError> {
        self.send(SessionInput::Hangup)
    }
}

/// Reads a mono 16-bit WAV file whose sample rate is `rate` Hz.
///
/// # Errors
/// The file is unreadable or in another format; the message names the file and what is wrong.
pub fn read_wav(path: &Path, rate: u32) -> Result<Vec<i16>, TestKitError> {
    let bad = |m: String| TestKitError::Input(format!("{}: {m}", path.display()));
    let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
        || spec.sample_rate != rate
    {
        return Err(bad(format!(
            "{} channel(s), {}-bit, {} Hz; need mono 16-bit PCM at {rate} Hz",
            spec.channels, spec.bits_per_sample, spec.sample_rate
        )));
    }
    reader
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))
}

/// Reads a recorded list of inputs: a JSON array of [`SessionInput`]s, or one per line.
///
/// # Errors
/// The file is unreadable or not such a list; the message names the file (and line).
pub fn load_recording(path: impl AsRef<Path>) -> Result<Vec<SessionInput>, TestKitError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| TestKitError::Input(format!("{}: {e}", path.display())))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .map_err(|e| TestKitError::Input(format!("{}: {e}", path.display())));
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .map_err(|e| TestKitError::Input(format!("{}:{}: {e}", path.display(), n + 1)))
        })
        .collect()
}

/// Writes inputs as a recording [`load_recording`] reads back (one per line).
///
/// # Errors
/// The file could not be written.
pub fn save_recording(path: impl AsRef<Path>, inputs: &[SessionInput]) -> Result<(), TestKitError> {
    let path = path.as_ref();
    let mut text = String::new();
    for input in inputs {
        let line = serde_json::to_string(input)
            .map_err(|e| TestKitError::Input(format!("{}: {e}", path.display())))?;
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| TestKitError::Input(format!("{}: {e}", path.display())))
}

/// Every sample the plugin asked to play, in order, as PCM16 (μ-law decoded), at whatever
/// rate each `play` declared.
pub fn played_samples(outputs: &[SessionOutput]) -> Vec<i16> {
    outputs
        .iter()
        .flat_map(|o| match o {
            SessionOutput::Play(frame) => match frame.format.encoding {
                AudioEncoding::Pcm16 => pcm16_from_bytes(&frame.data),
                AudioEncoding::Mulaw => frame.data.iter().map(|b| mulaw_decode(*b)).collect(),
            },
            _ => Vec::new(),
        })
        .collect()
}

/// The names of the marks among `outputs`, in order.
pub fn marks(outputs: &[SessionOutput]) -> Vec<&str> {
    outputs
        .iter()
        .filter_map(|o| match o {
            SessionOutput::Mark(name) => Some(name.as_str()),
            _ => None,
        })
        .collect()
}
