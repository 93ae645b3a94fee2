//! Audio in the host: the G.711 μ-law codec ([`mulaw`]), sample-rate conversion ([`resample`]),
//! and the per-call converters between Twilio's 8 kHz μ-law frames and a plugin's declared
//! format ([`convert`]), the playback clock ([`playback`]), and what the caller said against what the
//! agent played: voice activity ([`vad`]) and echo ([`echo`]).

pub mod convert;
pub mod echo;
pub mod mulaw;
pub mod playback;
pub mod resample;
pub mod vad;

/// Twilio's sample rate (Hz).
pub const TWILIO_SAMPLE_RATE: u32 = 8000;

/// Samples (= μ-law bytes) in one 20 ms Twilio frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// Duration of one frame (ms).
pub const FRAME_MS: u64 = 20;
