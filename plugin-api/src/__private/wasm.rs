//! WASM glue: adapts a stage type to the resource wit-bindgen generates for its world.

use std::cell::RefCell;

use crate::types::{
    LlmInput, LlmOutput, PluginError, SessionConfig, SessionInput, SessionOutput, SttInput,
    SttOutput, TtsInput, TtsOutput,
};
use crate::{Llm, Realtime, Stt, Tts};

/// A stage value behind its component resource. The component model hands `handle` a shared
/// reference; a component instance is single-threaded, so a `RefCell` gives the `&mut` the
/// stage traits take. The host never re-enters a session, so the borrow cannot fail; if it ever
/// did, the panic would trap this call only.
pub struct Cell<T>(RefCell<T>);

impl<T: Realtime> crate::exports::switchboard::plugin::realtime::GuestSession for Cell<T> {
    fn open(
        config: SessionConfig,
    ) -> Result<crate::exports::switchboard::plugin::realtime::Session, PluginError> {
        T::open(config).map(|s| {
            crate::exports::switchboard::plugin::realtime::Session::new(Cell(RefCell::new(s)))
        })
    }

    fn handle(&self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        self.0.borrow_mut().handle(input)
    }
}

impl<T: Stt> crate::stages::stt::exports::switchboard::plugin::stt::GuestRecognizer for Cell<T> {
    fn open(
        config: SessionConfig,
    ) -> Result<crate::stages::stt::exports::switchboard::plugin::stt::Recognizer, PluginError>
    {
        T::open(config).map(|s| {
            crate::stages::stt::exports::switchboard::plugin::stt::Recognizer::new(Cell(
                RefCell::new(s),
            ))
        })
    }

    fn handle(&self, input: SttInput) -> Result<Vec<SttOutput>, PluginError> {
        self.0.borrow_mut().handle(input)
    }
}

impl<T: Llm> crate::stages::llm::exports::switchboard::plugin::llm::GuestConversation for Cell<T> {
    fn open(
        config: SessionConfig,
    ) -> Result<crate::stages::llm::exports::switchboard::plugin::llm::Conversation, PluginError>
    {
        T::open(config).map(|s| {
            crate::stages::llm::exports::switchboard::plugin::llm::Conversation::new(Cell(
                RefCell::new(s),
            ))
        })
    }

    fn handle(&self, input: LlmInput) -> Result<Vec<LlmOutput>, PluginError> {
        self.0.borrow_mut().handle(input)
    }
}

impl<T: Tts> crate::stages::tts::exports::switchboard::plugin::tts::GuestSynthesizer for Cell<T> {
    fn open(
        config: SessionConfig,
    ) -> Result<crate::stages::tts::exports::switchboard::plugin::tts::Synthesizer, PluginError>
    {
        T::open(config).map(|s| {
            crate::stages::tts::exports::switchboard::plugin::tts::Synthesizer::new(Cell(
                RefCell::new(s),
            ))
        })
    }

    fn handle(&self, input: TtsInput) -> Result<Vec<TtsOutput>, PluginError> {
        self.0.borrow_mut().handle(input)
    }
}
