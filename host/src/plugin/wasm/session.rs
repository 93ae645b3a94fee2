//! Realtime sessions of a WASM component, in every contract version the host loads: feeding one
//! the host's inputs (converted for its version) and taking its outputs back.

use super::*;

impl WasmPlugin {
    /// Instantiates the plugin in a fresh store and opens a session for one call.
    ///
    /// # Errors
    /// The plugin refused the config ([`SessionError::Plugin`]) or trapped.
    pub async fn open(&self, config: &SessionConfig) -> Result<WasmSession, SessionError> {
        let (mut store, instance) = self.instantiate(self.open_budget()).await?;
        let instance = match instance {
            Instance::Realtime(i) => RealtimeInstance::V02(i),
            Instance::V01Realtime(i) => RealtimeInstance::V01(i),
            _ => {
                return Err(SessionError::Contract(format!(
                    "is a {} plugin, not a realtime plugin",
                    self.stage.describe()
                )));
            }
        };
        store.data_mut().io = SessionIo::new(&self.name, config.io.clone());
        let wit_config = config_to_wit(config, self.info.input_format);
        let session = match &instance {
            RealtimeInstance::V02(i) => {
                i.switchboard_plugin_realtime()
                    .session()
                    .call_open(&mut store, &wit_config)
                    .await
            }
            RealtimeInstance::V01(i) => {
                i.switchboard_plugin_realtime()
                    .session()
                    .call_open(&mut store, &wit_config)
                    .await
            }
        };
        let session = match session {
            Ok(r) => r.map_err(plugin_error)?,
            Err(e) => return Err(trap(&mut store, e)),
        };
        store.data_mut().meter.end()?;
        Ok(WasmSession {
            store,
            instance,
            session: Some(session),
            input_format: self.info.input_format,
            handle_budget: self.handle_budget,
        })
    }
}

/// A realtime input, converted for the instance's contract version.
enum RealtimeInput {
    V02(wit_rt::SessionInput),
    V01(v0_1::rt::SessionInput),
}

/// A realtime instance, by contract version.
enum RealtimeInstance {
    V02(bindings::RealtimePlugin),
    V01(v0_1::bindings::RealtimePlugin),
}

/// One call's session: its own store, instance and `session` resource.
pub struct WasmSession {
    store: Store<HostState>,
    instance: RealtimeInstance,
    session: Option<ResourceAny>,
    input_format: AudioFormat,
    handle_budget: Duration,
}

impl WasmSession {
    /// Feeds one input within [`HANDLE_BUDGET_TICKS`].
    ///
    /// # Errors
    /// The plugin returned an error, or trapped (including running out of time or memory); after
    /// a trap the session is closed and every later call fails.
    pub async fn handle(
        &mut self,
        input: SessionInput,
    ) -> Result<Vec<SessionOutput>, SessionError> {
        let Some(session) = self.session else {
            return Err(SessionError::Contract("session already failed".into()));
        };
        if let SessionInput::Io(event) = &input {
            self.store.data_mut().io.observe(event);
        }
        let input = match &self.instance {
            RealtimeInstance::V02(_) => RealtimeInput::V02(input_to_wit(input, self.input_format)),
            RealtimeInstance::V01(_) => match v0_1::input_to_wit(input, self.input_format) {
                Some(input) => RealtimeInput::V01(input),
                // 0.1.0 has no tool calls.
                None => return Ok(Vec::new()),
            },
        };
        self.store.data_mut().meter.begin(self.handle_budget);
        self.store.set_epoch_deadline(1);
        let result = match (&self.instance, &input) {
            (RealtimeInstance::V02(i), RealtimeInput::V02(input)) => i
                .switchboard_plugin_realtime()
                .session()
                .call_handle(&mut self.store, session, input)
                .await
                .map(|r| r.map(|o| o.into_iter().map(output_from_wit).collect::<Vec<_>>())),
            (RealtimeInstance::V01(i), RealtimeInput::V01(input)) => i
                .switchboard_plugin_realtime()
                .session()
                .call_handle(&mut self.store, session, input)
                .await
                .map(|r| r.map(|o| o.into_iter().map(v0_1::output_from_wit).collect::<Vec<_>>())),
            _ => {
                return Err(SessionError::Contract(
                    "input of another contract version".into(),
                ));
            }
        };
        let outputs = match result {
            Ok(r) => r.map_err(plugin_error),
            Err(e) => {
                // A trapped instance must not be entered again.
                self.session = None;
                return Err(trap(&mut self.store, e));
            }
        };
        if let Err(e) = self.store.data_mut().meter.end() {
            self.session = None;
            return Err(e);
        }
        let outputs = outputs?;
        if outputs.len() > MAX_OUTPUTS_PER_HANDLE {
            self.session = None;
            return Err(SessionError::Output(format!(
                "returned {} outputs from one input (limit {MAX_OUTPUTS_PER_HANDLE})",
                outputs.len()
            )));
        }
        Ok(outputs)
    }
}

impl WasmSession {
    /// Takes the host I/O the plugin queued during its last call.
    pub fn take_io(&mut self) -> Vec<IoCommand> {
        self.store.data_mut().io.take_commands()
    }

    /// Charges host work done for the plugin (converting its audio) to its CPU share.
    ///
    /// # Errors
    /// [`SessionError::Cpu`] when the share ran out; the session is closed.
    pub fn charge(&mut self, used: Duration) -> Result<(), SessionError> {
        let result = self
            .store
            .data_mut()
            .meter
            .bucket
            .charge(used, Instant::now())
            .map_err(SessionError::from);
        if result.is_err() {
            self.session = None;
        }
        result
    }

    /// Marks the session unusable: a call into it was abandoned half-way (the caller hung up
    /// while it ran), so its instance must not be entered again.
    pub fn abandon(&mut self) {
        self.session = None;
    }
}
