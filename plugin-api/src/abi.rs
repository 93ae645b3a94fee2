//! The native plugin ABI, version [`ABI_VERSION`]: how a host and a plugin built as a native
//! library (`cdylib`) call each other. [`export_plugin!`](crate::export_plugin) implements the
//! plugin side; Switchboard's `plugin::native` module is the host side.
//!
//! # Shape
//! The library exports one C symbol, [`ENTRY_SYMBOL`], of type [`EntryFn`]. The host calls it once
//! with its own [`HostApi`] table and gets back a [`PluginApi`] table that lives as long as the
//! process (libraries are never unloaded). Every table starts with `abi_version` and `size`
//! (bytes): the host checks the version before reading anything else, and fields are only ever
//! appended, so `size` says which of them a table has.
//!
//! # Data
//! Inputs and outputs cross as bytes: the contract's types ([`crate::types`], generated from
//! `wit/plugin.wit`) encoded with [postcard](https://docs.rs/postcard) 1.x, whose wire format is
//! specified and stable (varint lengths and enum tags, fields in declaration order). WIT variants
//! and records are append-only within a contract version, so the encoding is too.
//!
//! Buffers returned by a plugin are allocated by the plugin and must be given back to its
//! `free` function (host and plugin may use different allocators).
//!
//! # Failure
//! Every entry point catches panics and reports them as [`status::PANIC`] with the message;
//! a session that panicked must not be used again. Native plugins are trusted code: nothing stops
//! one from corrupting memory or hanging a thread; see the host's docs for what it does about it.

// The one module of the SDK that calls across the C ABI; every `unsafe` block says why it holds.
#![allow(unsafe_code)]

use std::ffi::c_void;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of this ABI. The host refuses a library whose table has another version.
pub const ABI_VERSION: u32 = 1;

/// Name of the symbol every native plugin exports, of type [`EntryFn`].
pub const ENTRY_SYMBOL: &str = "switchboard_plugin_entry";

/// The entry point: records the host's table and returns the plugin's. May be called more than
/// once (it returns the same table).
pub type EntryFn = unsafe extern "C" fn(host: *const HostApi) -> *const PluginApi;

/// [`PluginApi::stage`] of a realtime (speech-to-speech) plugin.
pub const STAGE_REALTIME: u32 = 0;
/// [`PluginApi::stage`] of a speech-to-text plugin.
pub const STAGE_STT: u32 = 1;
/// [`PluginApi::stage`] of a language-model plugin.
pub const STAGE_LLM: u32 = 2;
/// [`PluginApi::stage`] of a text-to-speech plugin.
pub const STAGE_TTS: u32 = 3;

/// Status codes returned by the plugin's functions.
pub mod status {
    /// Success; the output buffer holds the encoded result (may be empty).
    pub const OK: i32 = 0;
    /// The plugin returned a `plugin-error`; the buffer holds it, encoded.
    pub const PLUGIN_ERROR: i32 = 1;
    /// The plugin panicked; the buffer holds the panic message as UTF-8. The session is unusable.
    pub const PANIC: i32 = 2;
    /// The plugin could not decode its input (host and plugin disagree on the encoding); the
    /// buffer holds the decoder's message as UTF-8.
    pub const BAD_INPUT: i32 = 3;
}

/// A borrowed UTF-8 string: pointer and length in bytes, not NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Str {
    /// Borrows `s`.
    pub const fn new(s: &str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes, as a (lossily decoded) string.
    ///
    /// # Safety
    /// `ptr` and `len` describe readable memory that outlives `'a`.
    pub unsafe fn to_string_lossy<'a>(&self) -> std::borrow::Cow<'a, str> {
        if self.ptr.is_null() {
            return "".into();
        }
        // SAFETY: the caller vouches for `ptr` and `len`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        String::from_utf8_lossy(bytes)
    }
}

/// A byte buffer owned by the plugin, handed to the host; the host copies it and gives it back
/// to [`PluginApi::free`].
#[repr(C)]
#[derive(Debug)]
pub struct Buffer {
    /// First byte (dangling when `cap` is 0).
    pub ptr: *mut u8,
    /// Bytes in use.
    pub len: usize,
    /// Bytes allocated.
    pub cap: usize,
}

impl Buffer {
    /// No bytes, nothing allocated.
    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    /// Hands `v`'s allocation over.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// The buffer came from [`Buffer::from_vec`] (or is empty) and has not been freed.
    pub unsafe fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the caller vouches that the buffer is live.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// What the host gives a native plugin.
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    /// [`ABI_VERSION`] of the host.
    pub abi_version: u32,
    /// `size_of::<HostApi>()` of the host, in bytes.
    pub size: u32,
    /// Writes a log line; `level` is the WIT `log-level` index (0 trace … 4 error).
    pub log: unsafe extern "C" fn(level: u32, message: Str),
    /// Milliseconds since the Unix epoch.
    pub now_ms: unsafe extern "C" fn() -> u64,
    /// Host I/O and secrets: decodes a [`HostCall`] from `call[..len]` and writes the encoded
    /// [`HostReply`] into `out` (a buffer of the host's, given back with `free`). Status `OK`, or
    /// `BAD_INPUT` with a UTF-8 message. Only callable during a session's `open` or `handle`.
    pub io: unsafe extern "C" fn(call: *const u8, len: usize, out: *mut Buffer) -> i32,
    /// Frees a buffer the host returned.
    pub free: unsafe extern "C" fn(buffer: Buffer),
}

/// A host function call from a native plugin, encoded for [`HostApi::io`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HostCall {
    /// `secret(name)`.
    Secret(String),
    /// `ws-connect(url, headers)`.
    WsConnect {
        /// `wss://…` or `ws://…`.
        url: String,
        /// Handshake headers.
        headers: Vec<crate::types::Header>,
    },
    /// `ws-send(socket, message)`.
    WsSend {
        /// The socket.
        socket: u32,
        /// The message.
        message: crate::types::Payload,
    },
    /// `ws-close(socket)`.
    WsClose(u32),
    /// `http-send(request)`.
    HttpSend(crate::types::HttpRequest),
    /// `set-timer(delay-ms)`.
    SetTimer(u32),
    /// `cancel(target)`.
    Cancel(u32),
}

/// The host's answer to a [`HostCall`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HostReply {
    /// To `Secret`.
    Secret(Option<String>),
    /// To `WsConnect`, `HttpSend`, `SetTimer`.
    Handle(Result<u32, crate::types::IoError>),
    /// To `WsSend`, `WsClose`, `Cancel`.
    Done(Result<(), crate::types::IoError>),
}

/// What a native plugin gives the host. The realtime stage's functions are `open`, `handle`,
/// `close`; later stages append theirs.
#[repr(C)]
#[derive(Debug)]
pub struct PluginApi {
    /// [`ABI_VERSION`] the plugin was built for.
    pub abi_version: u32,
    /// `size_of::<PluginApi>()` of the plugin, in bytes.
    pub size: u32,
    /// The WIT contract version the plugin's types come from ([`crate::CONTRACT_VERSION`]).
    pub contract_version: Str,
    /// `"<crate name> <crate version>; switchboard-plugin-api <version>"`, for operators.
    pub build_info: Str,
    /// Writes the encoded `plugin-info` into `out`. Status `OK` or `PANIC`.
    pub describe: unsafe extern "C" fn(out: *mut Buffer) -> i32,
    /// Decodes a `session-config` from `config[..len]` and opens a session, writing its pointer
    /// to `session`. Status `OK` (empty `out`), `PLUGIN_ERROR`, `PANIC` or `BAD_INPUT`.
    pub open: unsafe extern "C" fn(
        config: *const u8,
        len: usize,
        session: *mut *mut c_void,
        out: *mut Buffer,
    ) -> i32,
    /// Decodes a `session-input` from `input[..len]`, feeds it to `session` and writes the
    /// encoded `list<session-output>` into `out`. Status `OK`, `PLUGIN_ERROR`, `PANIC` or
    /// `BAD_INPUT`. Never called on one session from two threads at once.
    pub handle: unsafe extern "C" fn(
        session: *mut c_void,
        input: *const u8,
        len: usize,
        out: *mut Buffer,
    ) -> i32,
    /// Drops a session. Called once per opened session; a panic in the plugin's drop is caught.
    pub close: unsafe extern "C" fn(session: *mut c_void),
    /// Frees a buffer this plugin returned.
    pub free: unsafe extern "C" fn(buffer: Buffer),
    /// Which stage `open`/`handle` speak (`STAGE_REALTIME`, `STAGE_STT`, `STAGE_LLM`,
    /// `STAGE_TTS`): the input and output types they decode and encode.
    pub stage: u32,
}

// SAFETY: the table is immutable; its `Str`s point at `'static` string literals and its
// functions are thread-safe entry points.
unsafe impl Sync for PluginApi {}
// SAFETY: as above.
unsafe impl Send for PluginApi {}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot decode: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes a contract value for the wire.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising into a growable Vec fails only for types postcard cannot express (none of the
    // contract's types); an empty buffer then fails to decode loudly on the other side.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decodes a contract value from the wire.
///
/// # Errors
/// The bytes are not a valid encoding of `T` (truncated, unknown variant, bad UTF-8).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// The plugin side of the ABI, used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub mod glue {
    use std::ffi::c_void;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicPtr, Ordering};

    use super::{
        ABI_VERSION, Buffer, HostApi, HostCall, HostReply, PluginApi, Str, decode, encode, status,
    };
    use crate::stage::Stage;
    use crate::types::{
        Header, HttpRequest, IoError, IoHandle, LogLevel, Payload, PluginError, SessionConfig,
    };

    static HOST: AtomicPtr<HostApi> = AtomicPtr::new(std::ptr::null_mut());

    /// Records the host's table (ignored when null or of another ABI version).
    ///
    /// # Safety
    /// `host` is null or points to a `HostApi` that lives for the rest of the process.
    pub unsafe fn install_host(host: *const HostApi) {
        if host.is_null() {
            return;
        }
        // SAFETY: non-null and live, per the contract; `abi_version` is the first field of
        // every version of the table.
        if unsafe { (*host).abi_version } == ABI_VERSION {
            HOST.store(host.cast_mut(), Ordering::Release);
        }
    }

    fn host() -> Option<&'static HostApi> {
        // SAFETY: only `install_host` stores here, with a pointer that lives forever.
        unsafe { HOST.load(Ordering::Acquire).as_ref() }
    }

    /// Logs through the host, or to stderr when no host is installed (unit tests, test kit).
    pub fn log(level: LogLevel, message: &str) {
        let index = match level {
            LogLevel::Trace => 0,
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
        };
        match host() {
            // SAFETY: `message` outlives the call; the host copies what it keeps.
            Some(h) => unsafe { (h.log)(index, Str::new(message)) },
            None => eprintln!("[plugin {level:?}] {message}"),
        }
    }

    /// The host's clock, or the system clock when no host is installed.
    pub fn now_ms() -> u64 {
        match host() {
            // SAFETY: a plain function of the host.
            Some(h) => unsafe { (h.now_ms)() },
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// Calls the host's `io` function (or answers as a host without I/O would).
    fn host_call(call: &HostCall) -> HostReply {
        let unavailable = || IoError::Invalid("host I/O is not available here".into());
        let Some(h) = host().filter(|h| h.size as usize >= size_of::<HostApi>()) else {
            return match call {
                HostCall::Secret(_) => HostReply::Secret(None),
                HostCall::WsConnect { .. } | HostCall::HttpSend(_) | HostCall::SetTimer(_) => {
                    HostReply::Handle(Err(unavailable()))
                }
                _ => HostReply::Done(Err(unavailable())),
            };
        };
        let bytes = encode(call);
        let mut out = Buffer::empty();
        // SAFETY: `bytes` is readable and `out` writable for the call; the host's buffer is
        // copied, then given back to the host's `free`.
        let (code, reply) = unsafe {
            let code = (h.io)(bytes.as_ptr(), bytes.len(), &mut out);
            let reply = out.as_slice().to_vec();
            (h.free)(out);
            (code, reply)
        };
        let failed = |m: String| match call {
            HostCall::Secret(_) => HostReply::Secret(None),
            HostCall::WsConnect { .. } | HostCall::HttpSend(_) | HostCall::SetTimer(_) => {
                HostReply::Handle(Err(IoError::Invalid(m)))
            }
            _ => HostReply::Done(Err(IoError::Invalid(m))),
        };
        if code != status::OK {
            return failed(String::from_utf8_lossy(&reply).into_owned());
        }
        decode(&reply).unwrap_or_else(|e| failed(e.to_string()))
    }

    fn handle_reply(reply: HostReply) -> Result<IoHandle, IoError> {
        match reply {
            HostReply::Handle(r) => r,
            other => Err(IoError::Invalid(format!("unexpected host reply {other:?}"))),
        }
    }

    fn done_reply(reply: HostReply) -> Result<(), IoError> {
        match reply {
            HostReply::Done(r) => r,
            other => Err(IoError::Invalid(format!("unexpected host reply {other:?}"))),
        }
    }

    /// `host::secret` on a native build.
    pub fn secret(name: &str) -> Option<String> {
        match host_call(&HostCall::Secret(name.into())) {
            HostReply::Secret(s) => s,
            _ => None,
        }
    }

    /// `host::ws_connect` on a native build.
    pub fn ws_connect(url: &str, headers: &[Header]) -> Result<IoHandle, IoError> {
        handle_reply(host_call(&HostCall::WsConnect {
            url: url.into(),
            headers: headers.to_vec(),
        }))
    }

    /// `host::ws_send` on a native build.
    pub fn ws_send(socket: IoHandle, message: &Payload) -> Result<(), IoError> {
        done_reply(host_call(&HostCall::WsSend {
            socket,
            message: message.clone(),
        }))
    }

    /// `host::ws_close` on a native build.
    pub fn ws_close(socket: IoHandle) -> Result<(), IoError> {
        done_reply(host_call(&HostCall::WsClose(socket)))
    }

    /// `host::http_send` on a native build.
    pub fn http_send(request: &HttpRequest) -> Result<IoHandle, IoError> {
        handle_reply(host_call(&HostCall::HttpSend(request.clone())))
    }

    /// `host::set_timer` on a native build.
    pub fn set_timer(delay_ms: u32) -> Result<IoHandle, IoError> {
        handle_reply(host_call(&HostCall::SetTimer(delay_ms)))
    }

    /// `host::cancel` on a native build.
    pub fn cancel(target: IoHandle) {
        let _ = host_call(&HostCall::Cancel(target));
    }

    /// The table for a plugin whose session type is the stage `T`.
    pub const fn plugin_api<T: Stage>(build_info: &'static str) -> PluginApi {
        PluginApi {
            abi_version: ABI_VERSION,
            size: size_of::<PluginApi>() as u32,
            contract_version: Str::new(crate::CONTRACT_VERSION),
            build_info: Str::new(build_info),
            describe: describe::<T>,
            open: open::<T>,
            handle: handle::<T>,
            close: close::<T>,
            free,
            stage: T::KIND,
        }
    }

    /// Runs `f`, catching a panic, and writes its bytes to `out`.
    ///
    /// # Safety
    /// `out` is valid for a write.
    unsafe fn guarded(out: *mut Buffer, f: impl FnOnce() -> (i32, Vec<u8>)) -> i32 {
        let (code, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic with a non-string payload".into());
                (status::PANIC, message.into_bytes())
            }
        };
        // SAFETY: the caller vouches for `out`.
        unsafe { out.write(Buffer::from_vec(bytes)) };
        code
    }

    fn plugin_error(e: &PluginError) -> (i32, Vec<u8>) {
        (status::PLUGIN_ERROR, encode(e))
    }

    unsafe extern "C" fn describe<T: Stage>(out: *mut Buffer) -> i32 {
        // SAFETY: the host passes a writable `out`.
        unsafe { guarded(out, || (status::OK, encode(&T::describe()))) }
    }

    unsafe extern "C" fn open<T: Stage>(
        config: *const u8,
        len: usize,
        session: *mut *mut c_void,
        out: *mut Buffer,
    ) -> i32 {
        // SAFETY: the host passes `len` readable bytes at `config`.
        let bytes = unsafe { slice(config, len) };
        let run = || {
            let config: SessionConfig = match decode(bytes) {
                Ok(c) => c,
                Err(e) => return (status::BAD_INPUT, e.to_string().into_bytes()),
            };
            match T::open(config) {
                Ok(s) => {
                    let ptr = Box::into_raw(Box::new(s)).cast::<c_void>();
                    // SAFETY: the host passes a writable `session`.
                    unsafe { session.write(ptr) };
                    (status::OK, Vec::new())
                }
                Err(e) => plugin_error(&e),
            }
        };
        // SAFETY: the host passes a writable `out`.
        unsafe { guarded(out, run) }
    }

    unsafe extern "C" fn handle<T: Stage>(
        session: *mut c_void,
        input: *const u8,
        len: usize,
        out: *mut Buffer,
    ) -> i32 {
        // SAFETY: the host passes `len` readable bytes at `input`.
        let bytes = unsafe { slice(input, len) };
        let run = || {
            let input: T::Input = match decode(bytes) {
                Ok(i) => i,
                Err(e) => return (status::BAD_INPUT, e.to_string().into_bytes()),
            };
            // SAFETY: `session` came from `open::<T>`, is not closed, and the host never calls
            // one session from two threads at once.
            let session = unsafe { &mut *session.cast::<T>() };
            match session.handle(input) {
                Ok(outputs) => (status::OK, encode(&outputs)),
                Err(e) => plugin_error(&e),
            }
        };
        // SAFETY: the host passes a writable `out`.
        unsafe { guarded(out, run) }
    }

    unsafe extern "C" fn close<T: Stage>(session: *mut c_void) {
        if session.is_null() {
            return;
        }
        // SAFETY: `session` came from `open::<T>` and is closed once.
        let boxed = unsafe { Box::from_raw(session.cast::<T>()) };
        // A panicking destructor must not unwind into the host.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(boxed)));
    }

    unsafe extern "C" fn free(buffer: Buffer) {
        if buffer.ptr.is_null() || buffer.cap == 0 {
            return;
        }
        // SAFETY: the buffer came from `Buffer::from_vec` in this library.
        drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
    }

    /// # Safety
    /// `ptr` is null (with `len` 0) or points to `len` readable bytes.
    unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
        if ptr.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: as the caller vouches.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The plugin side of the ABI, called through its table as a host would.

    use super::*;
    use crate::Realtime;
    use crate::types::*;

    struct Counter(u32);

    impl Realtime for Counter {
        fn describe() -> PluginInfo {
            PluginInfo {
                name: "counter".into(),
                version: "1.0.0".into(),
                description: "counts inputs".into(),
                input_format: AudioFormat {
                    encoding: AudioEncoding::Mulaw,
                    sample_rate: 8000,
                },
            }
        }
        fn open(config: SessionConfig) -> Result<Self, PluginError> {
            if config.settings == "bad" {
                return Err(PluginError::InvalidConfig("bad settings".into()));
            }
            Ok(Counter(0))
        }
        fn handle(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
            self.0 += 1;
            match input {
                SessionInput::Dtmf(d) if d == "!" => panic!("boom {}", self.0),
                SessionInput::Dtmf(d) => Err(PluginError::Upstream(d)),
                _ => Ok(vec![SessionOutput::Mark(format!("n{}", self.0))]),
            }
        }
    }

    static API: PluginApi = glue::plugin_api::<crate::stage::AsRealtime<Counter>>("counter 1.0.0");

    fn call(f: impl FnOnce(*mut Buffer) -> i32) -> (i32, Vec<u8>) {
        let mut out = Buffer::empty();
        let code = f(&mut out);
        // SAFETY: filled by the plugin, freed once below.
        let bytes = unsafe { out.as_slice() }.to_vec();
        // SAFETY: `out` came from this table's plugin and is given back exactly once.
        unsafe { (API.free)(out) };
        (code, bytes)
    }

    fn config(settings: &str) -> Vec<u8> {
        encode(&SessionConfig {
            call: CallInfo {
                call_sid: "CA1".into(),
                stream_sid: "MZ1".into(),
                from: "+1".into(),
                to: "+2".into(),
                direction: "inbound".into(),
                agent: "a".into(),
                parameters: vec![("k".into(), "v".into())],
            },
            settings: settings.into(),
            greeting: Some("hi".into()),
            input_format: Counter::describe().input_format,
        })
    }

    fn open(settings: &str) -> (i32, Vec<u8>, *mut c_void) {
        let bytes = config(settings);
        let mut session = std::ptr::null_mut();
        // SAFETY: `bytes` is readable for the call; `session` and `out` are writable.
        let (code, out) =
            call(|out| unsafe { (API.open)(bytes.as_ptr(), bytes.len(), &mut session, out) });
        (code, out, session)
    }

    fn handle(session: *mut c_void, input: &SessionInput) -> (i32, Vec<u8>) {
        let bytes = encode(input);
        // SAFETY: `session` is a live session of this table; `bytes` is readable, `out` writable.
        call(|out| unsafe { (API.handle)(session, bytes.as_ptr(), bytes.len(), out) })
    }

    #[test]
    fn table_carries_versions() {
        assert_eq!(API.abi_version, ABI_VERSION);
        assert_eq!(API.stage, STAGE_REALTIME);
        assert_eq!(API.size as usize, size_of::<PluginApi>());
        // SAFETY: the table's strings are `'static` literals of this crate.
        assert_eq!(unsafe { API.contract_version.to_string_lossy() }, "0.2.0");
        // SAFETY: as above.
        assert_eq!(unsafe { API.build_info.to_string_lossy() }, "counter 1.0.0");
    }

    #[test]
    fn describe_open_handle_close() {
        // SAFETY: `out` is writable for the call.
        let (code, bytes) = call(|out| unsafe { (API.describe)(out) });
        assert_eq!(code, status::OK);
        assert_eq!(decode::<PluginInfo>(&bytes).unwrap(), Counter::describe());

        let (code, out, session) = open("{}");
        assert_eq!((code, out.len()), (status::OK, 0));
        assert!(!session.is_null());
        let (code, bytes) = handle(session, &SessionInput::Interrupted(40));
        assert_eq!(code, status::OK);
        let outputs: Vec<SessionOutput> = decode(&bytes).unwrap();
        assert_eq!(outputs, vec![SessionOutput::Mark("n1".into())]);
        let (code, bytes) = handle(session, &SessionInput::Dtmf("5".into()));
        assert_eq!(code, status::PLUGIN_ERROR);
        assert_eq!(
            decode::<PluginError>(&bytes).unwrap(),
            PluginError::Upstream("5".into())
        );
        // SAFETY: `session` is live and closed once.
        unsafe { (API.close)(session) };
    }

    #[test]
    fn open_reports_plugin_errors() {
        let (code, out, session) = open("bad");
        assert_eq!(code, status::PLUGIN_ERROR);
        assert!(session.is_null());
        assert_eq!(
            decode::<PluginError>(&out).unwrap(),
            PluginError::InvalidConfig("bad settings".into())
        );
    }

    #[test]
    fn panics_are_caught_with_their_message() {
        let (_, _, session) = open("{}");
        let (code, bytes) = handle(session, &SessionInput::Dtmf("!".into()));
        assert_eq!(code, status::PANIC);
        assert_eq!(String::from_utf8_lossy(&bytes), "boom 1");
        // SAFETY: `session` is live and closed once.
        unsafe { (API.close)(session) };
    }

    #[test]
    fn garbage_input_is_refused_not_trusted() {
        let (_, _, session) = open("{}");
        let garbage = [0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        // SAFETY: `session` is live; `garbage` is readable (if meaningless), `out` writable.
        let (code, bytes) =
            call(|out| unsafe { (API.handle)(session, garbage.as_ptr(), garbage.len(), out) });
        assert_eq!(
            code,
            status::BAD_INPUT,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        // SAFETY: `session` is live and closed once.
        unsafe { (API.close)(session) };
    }

    #[test]
    fn encoding_is_postcard_v1() {
        // Pinned bytes: a change here breaks every native plugin already built.
        assert_eq!(encode(&SessionInput::Dtmf("#".into())), [1, 1, b'#']);
        assert_eq!(encode(&SessionInput::Hangup), [4]);
        assert_eq!(
            encode(&SessionOutput::Mark("m".into())),
            [2, 1, b'm'],
            "variant index, length, bytes"
        );
    }
}
