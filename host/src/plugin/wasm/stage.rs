//! Pipeline-stage sessions of a WASM component (`stt`, `llm`, `tts`, in every contract version
//! the host loads): opening one, and feeding it the host's stage inputs.

use super::*;

impl WasmPlugin {
    /// Instantiates a pipeline-stage plugin in a fresh store and opens its session for one call.
    ///
    /// # Errors
    /// The plugin is a realtime plugin, refused the config, or trapped.
    pub async fn open_stage(
        &self,
        config: &SessionConfig,
    ) -> Result<WasmStageSession, SessionError> {
        let (mut store, instance) = self.instantiate(self.open_budget()).await?;
        store.data_mut().io = SessionIo::new(&self.name, config.io.clone());
        let cfg = config_to_wit(config, self.info.input_format);
        // Every version's stage interfaces open alike; only their generated modules differ.
        macro_rules! open {
            ($i:expr, $interface:ident, $resource:ident) => {
                $i.$interface()
                    .$resource()
                    .call_open(&mut store, &cfg)
                    .await
            };
        }
        let opened = match &instance {
            Instance::Realtime(_) | Instance::V01Realtime(_) => {
                return Err(SessionError::Contract(
                    "is a realtime plugin, not a pipeline stage".into(),
                ));
            }
            Instance::Stt(i) => open!(i, switchboard_plugin_stt, recognizer),
            Instance::V01Stt(i) => open!(i, switchboard_plugin_stt, recognizer),
            Instance::Llm(i) => open!(i, switchboard_plugin_llm, conversation),
            Instance::V01Llm(i) => open!(i, switchboard_plugin_llm, conversation),
            Instance::Tts(i) => open!(i, switchboard_plugin_tts, synthesizer),
            Instance::V01Tts(i) => open!(i, switchboard_plugin_tts, synthesizer),
        };
        let resource = match opened {
            Ok(r) => r.map_err(plugin_error)?,
            Err(e) => return Err(trap(&mut store, e)),
        };
        store.data_mut().meter.end()?;
        Ok(WasmStageSession {
            store,
            instance,
            resource: Some(resource),
            input_format: self.info.input_format,
            handle_budget: self.handle_budget,
        })
    }
}

/// One call's session of a pipeline-stage component: its own store, instance and resource.
pub struct WasmStageSession {
    store: Store<HostState>,
    instance: Instance,
    resource: Option<ResourceAny>,
    input_format: AudioFormat,
    handle_budget: Duration,
}

impl WasmStageSession {
    /// Feeds one input within [`HANDLE_BUDGET_TICKS`].
    ///
    /// # Errors
    /// The input is not one this stage takes, the plugin returned an error, or it trapped (the
    /// session is closed after a trap).
    pub async fn handle(&mut self, input: StageInput) -> Result<Vec<StageOutput>, SessionError> {
        let Some(resource) = self.resource else {
            return Err(SessionError::Contract("session already failed".into()));
        };
        if let StageInput::Io(event) = &input {
            self.store.data_mut().io.observe(event);
        }
        let wrong = |input: &StageInput| {
            Err(SessionError::Contract(format!(
                "this stage does not take {input:?}"
            )))
        };
        let format = self.input_format;
        // The stt and tts interfaces are the same in every contract version; only their
        // generated modules differ.
        macro_rules! stt {
            ($i:expr, $ws:path) => {{
                use $ws as ws;
                let input = match input {
                    StageInput::Audio { data, timestamp_ms } => {
                        ws::SttInput::Audio(wit::AudioFrame {
                            format: format_to_wit(format),
                            data,
                            timestamp_ms,
                        })
                    }
                    StageInput::EndOfTurn => ws::SttInput::EndOfTurn,
                    StageInput::Io(e) => ws::SttInput::Io(event_to_wit(e)),
                    StageInput::Hangup => ws::SttInput::Hangup,
                    other => return wrong(&other),
                };
                self.store.data_mut().meter.begin(self.handle_budget);
                self.store.set_epoch_deadline(1);
                $i.switchboard_plugin_stt()
                    .recognizer()
                    .call_handle(&mut self.store, resource, &input)
                    .await
                    .map(|r| {
                        r.map(|outputs| {
                            outputs
                                .into_iter()
                                .map(|o| match o {
                                    ws::SttOutput::SpeechStarted => StageOutput::SpeechStarted,
                                    ws::SttOutput::Transcript(t) => StageOutput::Transcript {
                                        text: t.text,
                                        is_final: t.is_final,
                                    },
                                    ws::SttOutput::EndOfTurn => StageOutput::EndOfTurn,
                                })
                                .collect::<Vec<_>>()
                        })
                    })
            }};
        }
        macro_rules! tts {
            ($i:expr, $wt:path) => {{
                use $wt as wt;
                let input = match input {
                    StageInput::Text(t) => wt::TtsInput::Text(t),
                    StageInput::Flush => wt::TtsInput::Flush,
                    StageInput::Cancel => wt::TtsInput::Cancel,
                    StageInput::Io(e) => wt::TtsInput::Io(event_to_wit(e)),
                    StageInput::Hangup => wt::TtsInput::Hangup,
                    other => return wrong(&other),
                };
                self.store.data_mut().meter.begin(self.handle_budget);
                self.store.set_epoch_deadline(1);
                $i.switchboard_plugin_tts()
                    .synthesizer()
                    .call_handle(&mut self.store, resource, &input)
                    .await
                    .map(|r| {
                        r.map(|outputs| {
                            outputs
                                .into_iter()
                                .map(|o| match o {
                                    wt::TtsOutput::Audio(frame) => StageOutput::Audio {
                                        format: format_from_wit(frame.format),
                                        data: frame.data,
                                    },
                                    wt::TtsOutput::UtteranceDone => StageOutput::UtteranceDone,
                                })
                                .collect::<Vec<_>>()
                        })
                    })
            }};
        }
        let result = match &self.instance {
            Instance::Realtime(_) | Instance::V01Realtime(_) => return wrong(&input),
            Instance::Stt(i) => stt!(i, stage_bindings::stt::exports::switchboard::plugin::stt),
            Instance::V01Stt(i) => stt!(i, v0_1::stages::stt::exports::switchboard::plugin::stt),
            Instance::Tts(i) => tts!(i, stage_bindings::tts::exports::switchboard::plugin::tts),
            Instance::V01Tts(i) => tts!(i, v0_1::stages::tts::exports::switchboard::plugin::tts),
            Instance::Llm(i) => {
                use stage_bindings::llm::exports::switchboard::plugin::llm as wl;
                let input = match input {
                    StageInput::Reply(history) => wl::LlmInput::Reply(
                        history
                            .into_iter()
                            .map(|m| wl::Message {
                                role: match m.role {
                                    Role::System => wl::Role::System,
                                    Role::User => wl::Role::User,
                                    Role::Assistant => wl::Role::Assistant,
                                    Role::Tool => wl::Role::Tool,
                                },
                                content: m.content,
                                tool_calls: m
                                    .tool_calls
                                    .into_iter()
                                    .map(tool_call_to_wit)
                                    .collect(),
                                tool_call_id: m.tool_call_id,
                            })
                            .collect(),
                    ),
                    StageInput::Cancel => wl::LlmInput::Cancel,
                    StageInput::Io(e) => wl::LlmInput::Io(event_to_wit(e)),
                    StageInput::Hangup => wl::LlmInput::Hangup,
                    StageInput::Tools(tools) => {
                        wl::LlmInput::Tools(tools.into_iter().map(tool_to_wit).collect())
                    }
                    other => return wrong(&other),
                };
                self.store.data_mut().meter.begin(self.handle_budget);
                self.store.set_epoch_deadline(1);
                i.switchboard_plugin_llm()
                    .conversation()
                    .call_handle(&mut self.store, resource, &input)
                    .await
                    .map(|r| {
                        r.map(|outputs| {
                            outputs
                                .into_iter()
                                .map(|o| match o {
                                    wl::LlmOutput::TextDelta(t) => StageOutput::TextDelta(t),
                                    wl::LlmOutput::Done => StageOutput::Done,
                                    wl::LlmOutput::ToolCall(call) => {
                                        StageOutput::ToolCall(tool_call_from_wit(call))
                                    }
                                })
                                .collect::<Vec<_>>()
                        })
                    })
            }
            Instance::V01Llm(i) => {
                use v0_1::stages::llm::exports::switchboard::plugin::llm as wl;
                let input = match input {
                    StageInput::Reply(history) => wl::LlmInput::Reply(
                        history
                            .into_iter()
                            // 0.1.0 has no tool calls, so no tool messages either.
                            .filter_map(|m| {
                                let role = match m.role {
                                    Role::System => wl::Role::System,
                                    Role::User => wl::Role::User,
                                    Role::Assistant => wl::Role::Assistant,
                                    Role::Tool => return None,
                                };
                                Some(wl::Message {
                                    role,
                                    content: m.content,
                                })
                            })
                            .collect(),
                    ),
                    StageInput::Cancel => wl::LlmInput::Cancel,
                    StageInput::Io(e) => wl::LlmInput::Io(event_to_wit(e)),
                    StageInput::Hangup => wl::LlmInput::Hangup,
                    // 0.1.0 has no tool calls.
                    StageInput::Tools(_) => return Ok(Vec::new()),
                    other => return wrong(&other),
                };
                self.store.data_mut().meter.begin(self.handle_budget);
                self.store.set_epoch_deadline(1);
                i.switchboard_plugin_llm()
                    .conversation()
                    .call_handle(&mut self.store, resource, &input)
                    .await
                    .map(|r| {
                        r.map(|outputs| {
                            outputs
                                .into_iter()
                                .map(|o| match o {
                                    wl::LlmOutput::TextDelta(t) => StageOutput::TextDelta(t),
                                    wl::LlmOutput::Done => StageOutput::Done,
                                })
                                .collect::<Vec<_>>()
                        })
                    })
            }
        };
        let outputs = match result {
            Ok(r) => r.map_err(plugin_error),
            Err(e) => {
                self.resource = None;
                return Err(trap(&mut self.store, e));
            }
        };
        if let Err(e) = self.store.data_mut().meter.end() {
            self.resource = None;
            return Err(e);
        }
        let outputs = outputs?;
        if outputs.len() > MAX_OUTPUTS_PER_HANDLE {
            self.resource = None;
            return Err(SessionError::Output(format!(
                "returned {} outputs from one input (limit {MAX_OUTPUTS_PER_HANDLE})",
                outputs.len()
            )));
        }
        Ok(outputs)
    }

    /// Takes the host I/O the plugin queued during its last call.
    pub fn take_io(&mut self) -> Vec<IoCommand> {
        self.store.data_mut().io.take_commands()
    }
}
