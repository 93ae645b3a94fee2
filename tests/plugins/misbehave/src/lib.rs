//! Test fixture: a realtime plugin that behaves like echo (immediate mode) until the caller
//! presses `1`, then misbehaves as its settings say. The robustness tests use it to prove that
//! the host's sandbox ends only the call it runs in.
//!
//! Settings: `{"behaviour": "spin" | "hog" | "trap" | "slow" | "flood"}` (the settings string is
//! matched by substring to keep this fixture free of a JSON parser).
//! - `spin`: loops forever in `handle`.
//! - `hog`: allocates without bound (8 MiB reservations, so it meets the memory cap fast).
//! - `trap` or `panic`: panics (a WASM `unreachable`; a caught panic when native).
//! - `slow`: busy-waits 2 s in `handle`, past the host's time budget.
//! - `flood`: returns 100,000 `mark` outputs from one `handle`.
//!
//! Two well-behaved endings, for the call-control tests:
//! - `hangup`: asks the host to hang up (`hang-up`).
//! - `transfer`: asks the host to transfer the call to +15005550123 (`transfer`).
//!
//! It builds both ways, like every plugin: as a WASM component and as a native library.

use switchboard_plugin_api::prelude::*;

struct MisbehaveSession {
    behaviour: String,
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
        let behaviour = [
            "spin", "hog", "trap", "panic", "slow", "flood", "hangup", "transfer",
        ]
        .into_iter()
        .find(|b| config.settings.contains(b))
        .unwrap_or("none")
        .to_string();
        Ok(MisbehaveSession { behaviour })
    }

    fn handle(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        match input {
            SessionInput::Audio(frame) => Ok(vec![SessionOutput::Play(frame)]),
            SessionInput::Dtmf(d) if d == "1" => Ok(self.misbehave()),
            _ => Ok(Vec::new()),
        }
    }
}

impl MisbehaveSession {
    fn misbehave(&self) -> Vec<SessionOutput> {
        match self.behaviour.as_str() {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
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
                let until = host::now_ms() + 2000;
                while host::now_ms() < until {
                    std::hint::black_box(());
                }
                Vec::new()
            }
            "hangup" => vec![SessionOutput::HangUp],
            "transfer" => vec![SessionOutput::Transfer("+15005550123".into())],
            "flood" => (0..100_000)
                .map(|i| SessionOutput::Mark(format!("flood-{i}")))
                .collect(),
            _ => Vec::new(),
        }
    }
}

switchboard_plugin_api::export_plugin!(realtime: MisbehaveSession);
