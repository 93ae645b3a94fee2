//! WASM glue: adapts a [`Realtime`] type to the component exports wit-bindgen generates.

use std::cell::RefCell;

use crate::Realtime;
use crate::exports::switchboard::plugin::realtime::{GuestSession, Session};
use crate::types::{PluginError, SessionConfig, SessionInput, SessionOutput};

/// A session behind the `session` resource. The component model hands `handle` a shared
/// reference; a component instance is single-threaded, so a `RefCell` gives the `&mut` that
/// [`Realtime::handle`] takes.
pub struct RealtimeCell<T>(RefCell<T>);

impl<T: Realtime> GuestSession for RealtimeCell<T> {
    fn open(config: SessionConfig) -> Result<Session, PluginError> {
        T::open(config).map(|session| Session::new(RealtimeCell(RefCell::new(session))))
    }

    fn handle(&self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        // The host never re-enters a session, so this borrow cannot fail; if it ever did, the
        // panic would trap this call only.
        self.0.borrow_mut().handle(input)
    }
}
