//! Test fixture: a realtime plugin whose outputs are whatever the caller's audio says. The
//! plugin-boundary fuzz target (`switchboard_tests::fuzz::plugin_boundary`) sends the fuzzer's
//! bytes as caller audio (μ-law, untouched by the host), and this plugin reads each frame as a
//! script of outputs: audio that is long, empty, of odd length, in odd formats and rates; marks
//! with any name; clears; transcripts; transfers; hang-ups — and outputs after the hang-up,
//! since it answers the host's `hangup` input from the last script too.
//!
//! Script: a sequence of ops, one byte each (`byte % 9`) followed by its operands:
//! - 0 `play μ-law`: length `L` (1 byte) → `L × 7` bytes of μ-law at rate `R` (1 byte: 0 → 8 kHz,
//!   else `R × 250` Hz: mostly refused rates);
//! - 1 `play PCM16`: rate (2 bytes, little-endian, any value), length (1 byte) → `L × 3` bytes
//!   (odd lengths too);
//! - 2 `clear`;
//! - 3 `mark`: length (1 byte) then that many bytes of name (lossy UTF-8), or a long name when
//!   the length byte is 255;
//! - 4 `user transcript`, 5 `agent transcript`: length (1 byte) and text, final or partial by
//!   the low bit of the length;
//! - 6 `transfer`: length (1 byte) and number text;
//! - 7 `hang up`;
//! - 8 nothing (the padding of a short script).
//!
//! Large outputs: op 0 with length 255 plays 64 KiB (8 s); op 1 with length 255 plays 32 KiB.
//! DTMF and `hangup` run the last frame's script again (outputs after the hang-up); marks played
//! and interruptions do not (each would queue more audio and marks: a loop with no end).

#![forbid(unsafe_code)]

use switchboard_plugin_api::prelude::*;

struct FuzzerSession {
    /// The last caller frame's bytes: the script `hangup` and the other inputs run again.
    last: Vec<u8>,
}

/// Reads a script's operands, giving zeros past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn text(&mut self, len: usize) -> String {
        let start = self.at.min(self.bytes.len());
        let end = (self.at + len).min(self.bytes.len());
        self.at += len;
        String::from_utf8_lossy(&self.bytes[start..end]).into_owned()
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

fn audio(encoding: AudioEncoding, sample_rate: u32, len: usize, seed: u8) -> SessionOutput {
    SessionOutput::Play(AudioFrame {
        format: AudioFormat {
            encoding,
            sample_rate,
        },
        data: (0..len).map(|i| seed.wrapping_add(i as u8)).collect(),
        timestamp_ms: 0,
    })
}

/// The outputs `script` asks for.
fn run(script: &[u8]) -> Vec<SessionOutput> {
    let mut r = Reader {
        bytes: script,
        at: 0,
    };
    let mut out = Vec::new();
    while !r.done() {
        let op = r.byte() % 9;
        match op {
            0 => {
                let len = match r.byte() {
                    255 => 64 << 10,
                    l => usize::from(l) * 7,
                };
                let rate = match r.byte() {
                    0 => 8000,
                    x => u32::from(x) * 250,
                };
                out.push(audio(AudioEncoding::Mulaw, rate, len, op));
            }
            1 => {
                let rate = u32::from(u16::from_le_bytes([r.byte(), r.byte()]));
                let len = match r.byte() {
                    255 => 32 << 10,
                    l => usize::from(l) * 3,
                };
                out.push(audio(AudioEncoding::Pcm16, rate, len, op));
            }
            2 => out.push(SessionOutput::ClearPlayback),
            3 => {
                let name = match r.byte() {
                    255 => "m".repeat(300),
                    l => r.text(usize::from(l)),
                };
                out.push(SessionOutput::Mark(name));
            }
            4 | 5 => {
                let len = r.byte();
                let text = r.text(usize::from(len));
                let transcript = Transcript {
                    text,
                    is_final: len & 1 == 1,
                };
                out.push(if op == 4 {
                    SessionOutput::UserTranscript(transcript)
                } else {
                    SessionOutput::AgentTranscript(transcript)
                });
            }
            6 => {
                let len = r.byte();
                out.push(SessionOutput::Transfer(r.text(usize::from(len))));
            }
            7 => out.push(SessionOutput::HangUp),
            _ => {}
        }
    }
    out
}

impl Realtime for FuzzerSession {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "fuzzer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Outputs what the caller's audio scripts (test fixture)".into(),
            input_format: AudioFormat {
                encoding: AudioEncoding::Mulaw,
                sample_rate: 8000,
            },
        }
    }

    fn open(_config: SessionConfig) -> Result<Self, PluginError> {
        Ok(FuzzerSession { last: Vec::new() })
    }

    fn handle(&mut self, input: SessionInput) -> Result<Vec<SessionOutput>, PluginError> {
        match input {
            SessionInput::Audio(frame) => {
                self.last = frame.data;
                Ok(run(&self.last))
            }
            SessionInput::Dtmf(_) | SessionInput::Hangup => Ok(run(&self.last)),
            _ => Ok(Vec::new()),
        }
    }
}

switchboard_plugin_api::export_plugin!(realtime: FuzzerSession);
