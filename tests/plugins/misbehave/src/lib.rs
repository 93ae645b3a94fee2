//! Test fixture: a realtime plugin that behaves like echo (immediate mode) until the caller
//! presses `1`, then misbehaves as its settings say. The robustness and containment tests use it
//! to prove that the host's sandbox ends only the call it runs in, and that a neighbour call
//! keeps its timing.
//!
//! Settings: `{"behaviour": "…"}` (the settings string is matched by substring to keep this
//! fixture free of a JSON parser; longer names are matched first).
//!
//! At once, when `1` is pressed:
//! - `spin`: loops forever in `handle`.
//! - `hog`: allocates without bound (8 MiB reservations, so it meets the memory cap fast).
//! - `trap` or `panic`: panics (a WASM `unreachable`; a caught panic when native).
//! - `slow`: busy-waits 2 s in `handle`, past the host's time budget.
//! - `flood`: returns 100,000 `mark` outputs from one `handle`.
//! - `bigmark`: returns one `mark` whose name is 10 MiB long.
//!
//! From `1` on, on every caller frame (the call goes on, misbehaving):
//! - `busy`: busy-waits 150 ms, just under the 200 ms budget of one call, then echoes.
//! - `churn`: echoes the frame as PCM16 at another sample rate each time.
//! - `timers`: (from `1` on) keeps 64 zero-delay timers going, setting a new one as each fires.
//! - `logflood`: logs 1,000 lines.
//!
//! Without `1`:
//! - `open-spin`: loops forever in `open`.
//! - `hangup-spin`: loops forever when told the call is over (`hangup`).
//!
//! Two well-behaved endings, for the call-control tests:
//! - `hangup`: asks the host to hang up (`hang-up`).
//! - `transfer`: asks the host to transfer the call to +15005550123 (`transfer`).
//!
//! And one tool call (contract 0.2.0):
//! - `toolcall`: calls the tool `lookup_order` (call id `call_1`) and, given its result, says
//!   it as a final agent transcript (`call_1: output …` or `call_1: error …`). DTMF `2`–`9`
//!   make the calls the settings list (`"calls": [{"name": …, "arguments": {…}}, …]`, `2` the
//!   first), with ids `call_2`…; the tools the host declares are said as `tools: a,b,…`.
//!
//! It builds both ways, like every plugin: as a WASM component and as a native library.

#![forbid(unsafe_code)]

use switchboard_plugin_api::prelude::*;

struct MisbehaveSession {
    behaviour: String,
    /// `toolcall`: the calls DTMF `2`–`9` make, as (name, arguments JSON).
    calls: Vec<(String, String)>,
    /// `1` was pressed: the per-frame behaviours are on.
    triggered: bool,
    /// Frames echoed since `1` (for `churn`'s rates).
    frames: u32,
}

/// Every behaviour, longest first where one name contains another.
const BEHAVIOURS: [&str; 16] = [
    "open-spin",
    "hangup-spin",
    "spin",
    "hog",
    "trap",
    "panic",
    "slow",
    "logflood",
    "flood",
    "bigmark",
    "busy",
    "churn",
    "timers",
    "hangup",
    "transfer",
    "toolcall",
];

fn busy_wait(ms: u64) {
    let until = host::now_ms() + ms;
    while host::now_ms() < until {
        std::hint::black_box(());
    }
}

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Realtime for MisbehaveSession {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "misbehave".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Misbehaves on purpose (test fixture)".into(),
            input_format: AudioFormat {
                encoding: AudioEncoding::Mulaw,
                sample_rate: 8000,
            },
        }
    }

    fn open(config: SessionConfig) -> Result<Self, PluginError> {
        let settings = serde_json::from_str::<serde_json::Value>(&config.settings).ok();
        let named = settings
            .as_ref()
            .and_then(|s| s.get("behaviour"))
            .and_then(|b| b.as_str())
            .unwrap_or(&config.settings);
        let behaviour = BEHAVIOURS
            .into_iter()
            .find(|b| named.contains(b))
            .unwrap_or("none")
            .to_string();
        if behaviour == "open-spin" {
            spin_forever();
        }
        let calls = settings
            .and_then(|s| s.get("calls").and_then(|c| c.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["arguments"].to_string(),
                )
            })
            .collect();
        Ok(MisbehaveSession {
            behaviour,
            calls,
            triggered: false,
            frames: 0,
        })
    }

    fn handle(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        match input {
            SessionInput::Audio(frame) if self.triggered => Ok(self.on_frame(frame)),
            SessionInput::Audio(frame) => Ok(vec![SessionOutput::Play(frame)]),
            SessionInput::Dtmf(d) if d == "1" => {
                self.triggered = true;
                Ok(self.misbehave())
            }
            SessionInput::Io(IoEvent::Timer(_)) if self.behaviour == "timers" => {
                let _ = host::set_timer(0);
                Ok(Vec::new())
            }
            SessionInput::Hangup if self.behaviour == "hangup-spin" => spin_forever(),
            SessionInput::Dtmf(d) if self.behaviour == "toolcall" => {
                let n = d.parse::<usize>().unwrap_or(0);
                Ok(n.checked_sub(2)
                    .and_then(|i| self.calls.get(i))
                    .map(|(name, arguments)| {
                        vec![SessionOutput::ToolCall(ToolCall {
                            id: format!("call_{n}"),
                            name: name.clone(),
                            arguments: arguments.clone(),
                        })]
                    })
                    .unwrap_or_default())
            }
            SessionInput::Tools(tools) => {
                let names: Vec<String> = tools.into_iter().map(|t| t.name).collect();
                Ok(vec![SessionOutput::AgentTranscript(Transcript {
                    text: format!("tools: {}", names.join(",")),
                    is_final: true,
                })])
            }
            SessionInput::ToolResult(result) => {
                let said = match result.outcome {
                    ToolOutcome::Output(o) => format!("{}: output {o}", result.id),
                    ToolOutcome::Error(e) => format!("{}: error {e}", result.id),
                };
                Ok(vec![SessionOutput::AgentTranscript(Transcript {
                    text: said,
                    is_final: true,
                })])
            }
            _ => Ok(Vec::new()),
        }
    }
}

impl MisbehaveSession {
    /// What `1` does at once.
    fn misbehave(&self) -> Vec<SessionOutput> {
        match self.behaviour.as_str() {
            "spin" => spin_forever(),
            "hog" => {
                // Reserve (without writing) 8 MiB at a time: linear memory grows to the host's cap
                // in a few steps, well inside the time budget even on a loaded machine.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(8 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "trap" | "panic" => panic!("misbehave: trap on purpose"),
            "slow" => {
                busy_wait(2000);
                Vec::new()
            }
            "hangup" => vec![SessionOutput::HangUp],
            "transfer" => vec![SessionOutput::Transfer("+15005550123".into())],
            "toolcall" => vec![SessionOutput::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "lookup_order".into(),
                arguments: r#"{"order": "1042"}"#.into(),
            })],
            "flood" => (0..100_000)
                .map(|i| SessionOutput::Mark(format!("flood-{i}")))
                .collect(),
            "bigmark" => vec![SessionOutput::Mark("m".repeat(10 << 20))],
            "timers" => {
                for _ in 0..64 {
                    let _ = host::set_timer(0);
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// What each caller frame does once `1` was pressed.
    fn on_frame(&mut self, frame: AudioFrame) -> Vec<SessionOutput> {
        self.frames += 1;
        match self.behaviour.as_str() {
            "busy" => {
                busy_wait(150);
                vec![SessionOutput::Play(frame)]
            }
            "churn" => {
                // 20 ms of PCM16 silence at another rate each frame: a new resampler each time.
                const RATES: [u32; 8] = [
                    11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
                ];
                let rate = RATES[self.frames as usize % RATES.len()];
                let samples = rate as usize / 50;
                vec![SessionOutput::Play(AudioFrame {
                    format: AudioFormat {
                        encoding: AudioEncoding::Pcm16,
                        sample_rate: rate,
                    },
                    data: vec![0; samples * 2],
                    timestamp_ms: frame.timestamp_ms,
                })]
            }
            "logflood" => {
                for i in 0..1000 {
                    host::log(
                        LogLevel::Info,
                        &format!("misbehave: flood line {i}\nforged: line"),
                    );
                }
                vec![SessionOutput::Play(frame)]
            }
            _ => vec![SessionOutput::Play(frame)],
        }
    }
}

switchboard_plugin_api::export_plugin!(realtime: MisbehaveSession);
