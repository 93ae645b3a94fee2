//! The host's side of the native C ABI: the table of callbacks every native plugin gets
//! (`log`, `now_ms`, `io`, `free`), each catching its own panics, and the thread-local that
//! points a callback at the session whose call runs on the thread.

use super::*;

/// The host's table, given to every native plugin.
pub(super) static HOST_API: HostApi = HostApi {
    abi_version: abi::ABI_VERSION,
    size: size_of::<HostApi>() as u32,
    log: host_log,
    now_ms: host_now_ms,
    io: host_io,
    free: host_free,
};

thread_local! {
    /// The I/O of the session whose `open` or `handle` runs on this thread right now; null
    /// otherwise. Set by [`with_io`] around each call.
    static CURRENT_IO: std::cell::Cell<*mut SessionIo> = const { std::cell::Cell::new(std::ptr::null_mut()) };
    /// What a host callback's panic said, caught during the plugin call running on this thread;
    /// taken by [`with_io`] when the call returns.
    static HOST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `io` as the session I/O that host calls on this thread reach. Returns `f`'s
/// result and, when one of the host's callbacks panicked meanwhile, what the panic said: the
/// session must then end.
pub(super) fn with_io<T>(io: &mut SessionIo, f: impl FnOnce() -> T) -> (T, Option<String>) {
    struct Reset(*mut SessionIo);
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT_IO.with(|c| c.set(self.0));
        }
    }
    let previous = CURRENT_IO.with(|c| c.replace(io));
    let _reset = Reset(previous);
    HOST_PANIC.with(|p| p.borrow_mut().take());
    let result = f();
    (result, HOST_PANIC.with(|p| p.borrow_mut().take()))
}

/// Runs a host callback's body, catching a panic (unwinding into the plugin's frames through
/// `extern "C"` would abort the gateway): the panic is noted for [`with_io`], which ends the
/// session, and `fallback` is returned to the plugin.
pub(super) fn guarded<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            HOST_PANIC.with(|p| {
                p.borrow_mut().get_or_insert(message);
            });
            fallback
        }
    }
}

pub(super) unsafe extern "C" fn host_io(call: *const u8, len: usize, out: *mut Buffer) -> i32 {
    // SAFETY: forwarded as received; see `host_io_unguarded`.
    guarded(status::PANIC, || unsafe {
        host_io_unguarded(call, len, out)
    })
}

unsafe fn host_io_unguarded(call: *const u8, len: usize, out: *mut Buffer) -> i32 {
    let bytes = if call.is_null() || len == 0 {
        &[][..]
    } else {
        // SAFETY: the plugin passes `len` readable bytes (or null with 0).
        unsafe { std::slice::from_raw_parts(call, len) }
    };
    let (code, reply) = match abi::decode::<HostCall>(bytes) {
        Ok(call) => {
            let io = CURRENT_IO.with(std::cell::Cell::get);
            // SAFETY: set by `with_io` for the duration of a plugin call on this thread, from
            // a `&mut SessionIo` nothing else touches meanwhile.
            let reply = match unsafe { io.as_mut() } {
                Some(io) => dispatch(io, call),
                None => unavailable(&call),
            };
            (status::OK, abi::encode(&reply))
        }
        Err(e) => (status::BAD_INPUT, e.to_string().into_bytes()),
    };
    if !out.is_null() {
        // SAFETY: the plugin passes a writable buffer; it gives it back to `host_free`.
        unsafe { out.write(Buffer::from_vec(reply)) };
    }
    code
}

pub(super) unsafe extern "C" fn host_free(buffer: Buffer) {
    guarded((), || {
        if !buffer.ptr.is_null() && buffer.cap != 0 {
            // SAFETY: allocated by `Buffer::from_vec` in `host_io`.
            drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
        }
    })
}

pub(super) fn unavailable(call: &HostCall) -> HostReply {
    let error =
        || sdk::IoError::Invalid("host I/O is only available inside open and handle".into());
    match call {
        HostCall::Secret(_) => HostReply::Secret(None),
        HostCall::WsConnect { .. } | HostCall::HttpSend(_) | HostCall::SetTimer(_) => {
            HostReply::Handle(Err(error()))
        }
        _ => HostReply::Done(Err(error())),
    }
}

pub(super) fn dispatch(io: &mut SessionIo, call: HostCall) -> HostReply {
    let headers = |h: Vec<sdk::Header>| h.into_iter().map(|h| (h.name, h.value)).collect();
    match call {
        HostCall::Secret(name) => HostReply::Secret(io.secret(&name)),
        HostCall::WsConnect { url, headers: h } => {
            HostReply::Handle(io.ws_connect(url, headers(h)).map_err(io_error_to_sdk))
        }
        HostCall::WsSend { socket, message } => {
            let message = match message {
                sdk::Payload::Text(t) => Payload::Text(t),
                sdk::Payload::Binary(b) => Payload::Binary(b),
            };
            HostReply::Done(io.ws_send(socket, message).map_err(io_error_to_sdk))
        }
        HostCall::WsClose(socket) => HostReply::Done(io.ws_close(socket).map_err(io_error_to_sdk)),
        HostCall::HttpSend(r) => HostReply::Handle(
            io.http_send(HttpRequest {
                method: r.method,
                url: r.url,
                headers: headers(r.headers),
                body: r.body,
            })
            .map_err(io_error_to_sdk),
        ),
        HostCall::SetTimer(ms) => HostReply::Handle(io.set_timer(ms).map_err(io_error_to_sdk)),
        HostCall::Cancel(id) => {
            io.cancel(id);
            HostReply::Done(Ok(()))
        }
    }
}

pub(super) fn io_error_to_sdk(e: IoError) -> sdk::IoError {
    match e {
        IoError::Denied(m) => sdk::IoError::Denied(m),
        IoError::Limit(m) => sdk::IoError::Limit(m),
        IoError::Invalid(m) => sdk::IoError::Invalid(m),
    }
}

pub(super) unsafe extern "C" fn host_log(level: u32, message: Str) {
    guarded((), || {
        // The session's line budget (a plugin logging outside a call is not limited: it cannot
        // be, and only `open`/`handle` run plugin code on the host's behalf).
        let io = CURRENT_IO.with(std::cell::Cell::get);
        // SAFETY: as in `host_io_unguarded`.
        if let Some(io) = unsafe { io.as_mut() }
            && !io.admit_log()
        {
            return;
        }
        // SAFETY: the ABI says `message` is readable for the duration of this call.
        let message = escape_log(&unsafe { message.to_string_lossy() });
        match level {
            0 => tracing::trace!(native = true, "{message}"),
            1 => tracing::debug!(native = true, "{message}"),
            2 => tracing::info!(native = true, "{message}"),
            3 => tracing::warn!(native = true, "{message}"),
            _ => tracing::error!(native = true, "{message}"),
        }
    })
}

pub(super) unsafe extern "C" fn host_now_ms() -> u64 {
    guarded(0, || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}
