//! Per-call audio converters between Twilio and a plugin.
//!
//! [`ToPlugin`] turns each 20 ms frame of 8 kHz μ-law into the plugin's declared input format;
//! a plugin that takes μ-law at 8 kHz gets the bytes untouched. [`FromPlugin`] turns whatever a
//! plugin plays (any duration, PCM16 at any rate or μ-law at 8 kHz) into exact 160-byte μ-law
//! frames for Twilio, keeping the remainder until more audio, a mark or a flush.

use super::resample::{ResampleError, Resampler};
use super::{FRAME_SAMPLES, TWILIO_SAMPLE_RATE, mulaw};
use crate::plugin::{AudioEncoding, AudioFormat};

/// Why audio could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The resampler refused the rates or failed.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// μ-law audio at a rate other than 8 kHz.
    #[error("μ-law audio is only accepted at 8000 Hz, not {0} Hz")]
    MulawRate(u32),
    /// Buffered outbound audio would exceed [`MAX_PENDING_BYTES`].
    #[error("plugin queued more than {MAX_PENDING_BYTES} bytes of audio at once")]
    TooMuchAudio,
    /// PCM16 audio at a rate not in [`PLAY_RATES`].
    #[error(
        "audio at {0} Hz cannot be played: the host plays PCM16 at 8000, 11025, 12000, 16000, \
         22050, 24000, 32000, 44100 or 48000 Hz"
    )]
    Rate(u32),
    /// The session played at more than [`MAX_PLAY_RATES`] sample rates.
    #[error("plugin played audio at more than {MAX_PLAY_RATES} sample rates in one call")]
    TooManyRates,
}

/// Sample rates a plugin may play PCM16 at (Hz): the standard ones. Each converts to 8 kHz by a
/// small rational ratio, so building its resampler is cheap; an odd rate (8001 Hz) makes a
/// resampler whose set-up costs milliseconds of host CPU, which a plugin could repeat at will.
pub const PLAY_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];

/// Distinct sample rates one session may play at. A resampler is built once per rate and kept
/// (building one costs up to milliseconds of host CPU at odd rates); a real plugin uses one or
/// two, and the cap stops one that changes rate every frame from making the host work.
pub const MAX_PLAY_RATES: usize = 4;

/// Most μ-law bytes [`FromPlugin`] buffers before frames are taken (bytes = samples at 8 kHz):
/// 120 s of audio. A reply longer than that in one output is a plugin bug, and bounding it keeps
/// one call from exhausting the gateway's memory.
pub const MAX_PENDING_BYTES: usize = 120 * TWILIO_SAMPLE_RATE as usize;

/// Converts caller audio (8 kHz μ-law) to a plugin's input format.
pub struct ToPlugin {
    format: AudioFormat,
    resampler: Option<Resampler>,
    pcm: Vec<i16>,
    resampled: Vec<i16>,
}

impl ToPlugin {
    /// A converter to `format`.
    ///
    /// # Errors
    /// μ-law at another rate than 8 kHz, or a rate the resampler refuses.
    pub fn new(format: AudioFormat) -> Result<Self, ConvertError> {
        let resampler = match format.encoding {
            AudioEncoding::Mulaw if format.sample_rate != TWILIO_SAMPLE_RATE => {
                return Err(ConvertError::MulawRate(format.sample_rate));
            }
            AudioEncoding::Pcm16 if format.sample_rate != TWILIO_SAMPLE_RATE => {
                Some(Resampler::new(TWILIO_SAMPLE_RATE, format.sample_rate)?)
            }
            _ => None,
        };
        Ok(Self {
            format,
            resampler,
            pcm: Vec::with_capacity(FRAME_SAMPLES),
            resampled: Vec::new(),
        })
    }

    /// Converts one frame of μ-law into `out` (cleared first).
    ///
    /// # Errors
    /// The resampler failed.
    pub fn convert(&mut self, mulaw_in: &[u8], out: &mut Vec<u8>) -> Result<(), ConvertError> {
        out.clear();
        match (self.format.encoding, &mut self.resampler) {
            (AudioEncoding::Mulaw, _) => out.extend_from_slice(mulaw_in),
            (AudioEncoding::Pcm16, None) => mulaw::decode_to_pcm16le(mulaw_in, out),
            (AudioEncoding::Pcm16, Some(resampler)) => {
                self.pcm.clear();
                mulaw::decode_into(mulaw_in, &mut self.pcm);
                self.resampled.clear();
                resampler.process(&self.pcm, &mut self.resampled)?;
                out.reserve(self.resampled.len() * 2);
                for s in &self.resampled {
                    out.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

/// Converts plugin audio to Twilio's 8 kHz μ-law and cuts it into 20 ms frames.
#[derive(Default)]
pub struct FromPlugin {
    /// One resampler per rate played at (at most [`MAX_PLAY_RATES`]), kept for the call.
    resamplers: Vec<(u32, Resampler)>,
    pcm: Vec<i16>,
    resampled: Vec<i16>,
    pending: Vec<u8>,
    start: usize,
}

impl FromPlugin {
    /// A converter with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Converts `data` (in `format`) and appends it to the outbound buffer.
    ///
    /// # Errors
    /// μ-law at a rate other than 8 kHz, a rate the resampler refuses, or more than
    /// [`MAX_PENDING_BYTES`] buffered.
    pub fn push(&mut self, format: AudioFormat, data: &[u8]) -> Result<(), ConvertError> {
        self.compact();
        let added = match format.encoding {
            AudioEncoding::Mulaw if format.sample_rate == TWILIO_SAMPLE_RATE => data.len(),
            AudioEncoding::Mulaw => return Err(ConvertError::MulawRate(format.sample_rate)),
            AudioEncoding::Pcm16 if !PLAY_RATES.contains(&format.sample_rate) => {
                return Err(ConvertError::Rate(format.sample_rate));
            }
            AudioEncoding::Pcm16 => {
                data.len() / 2 * TWILIO_SAMPLE_RATE as usize / format.sample_rate as usize
            }
        };
        if self.pending.len() + added > MAX_PENDING_BYTES {
            return Err(ConvertError::TooMuchAudio);
        }
        match format.encoding {
            AudioEncoding::Mulaw => self.pending.extend_from_slice(data),
            AudioEncoding::Pcm16 if format.sample_rate == TWILIO_SAMPLE_RATE => {
                mulaw::encode_from_pcm16le(data, &mut self.pending)
            }
            AudioEncoding::Pcm16 => {
                let index = match self
                    .resamplers
                    .iter()
                    .position(|(rate, _)| *rate == format.sample_rate)
                {
                    Some(i) => i,
                    None if self.resamplers.len() >= MAX_PLAY_RATES => {
                        return Err(ConvertError::TooManyRates);
                    }
                    None => {
                        let r = Resampler::new(format.sample_rate, TWILIO_SAMPLE_RATE)?;
                        self.resamplers.push((format.sample_rate, r));
                        self.resamplers.len() - 1
                    }
                };
                let resampler = &mut self.resamplers[index].1;
                self.pcm.clear();
                self.pcm.extend(
                    data.chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]])),
                );
                self.resampled.clear();
                resampler.process(&self.pcm, &mut self.resampled)?;
                mulaw::encode_into(&self.resampled, &mut self.pending);
            }
        }
        Ok(())
    }

    /// The next whole 20 ms frame (160 bytes of μ-law), if one is buffered.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        if self.pending.len() - self.start < FRAME_SAMPLES {
            return None;
        }
        let frame = &self.pending[self.start..self.start + FRAME_SAMPLES];
        self.start += FRAME_SAMPLES;
        Some(frame)
    }

    /// The partial frame left over, padded with μ-law silence to 160 bytes; `None` when nothing
    /// is left. Used before a mark so that the mark follows all the audio before it.
    pub fn flush(&mut self) -> Option<&[u8]> {
        let left = self.pending.len() - self.start;
        if left == 0 {
            return None;
        }
        self.pending
            .resize(self.start + FRAME_SAMPLES, mulaw::SILENCE);
        self.next_frame()
    }

    /// Drops everything buffered (after a `clear`).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.start = 0;
    }

    /// μ-law bytes buffered and not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.pending.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.pending.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCM8K: AudioFormat = AudioFormat {
        encoding: AudioEncoding::Pcm16,
        sample_rate: 8000,
    };

    /// A plugin that changes its output rate every frame gets a resampler per rate up to
    /// [`MAX_PLAY_RATES`], reused when a rate comes back, and an error past that; rates not in
    /// [`PLAY_RATES`] are refused before anything is built.
    #[test]
    fn play_rates_are_cached_and_capped() {
        let mut from = FromPlugin::new();
        let pcm = |rate: u32| AudioFormat {
            encoding: AudioEncoding::Pcm16,
            sample_rate: rate,
        };
        let frame = vec![0u8; 640];
        for _ in 0..3 {
            for rate in [16_000, 24_000, 11_025, 44_100] {
                from.push(pcm(rate), &frame).expect("one of four rates");
            }
        }
        assert_eq!(from.resamplers.len(), MAX_PLAY_RATES);
        assert!(matches!(
            from.push(pcm(22_050), &frame),
            Err(ConvertError::TooManyRates)
        ));
        for rate in [0, 1, 7_999, 8_001, 44_000, 48_001, u32::MAX] {
            assert!(matches!(
                FromPlugin::new().push(pcm(rate), &frame),
                Err(ConvertError::Rate(r)) if r == rate
            ));
        }
    }

    #[test]
    fn mulaw_passes_through_untouched() {
        let mut to = ToPlugin::new(AudioFormat::TWILIO).expect("ok");
        let frame: Vec<u8> = (0..160).map(|i| i as u8).collect();
        let mut out = Vec::new();
        to.convert(&frame, &mut out).expect("ok");
        assert_eq!(out, frame);
    }

    #[test]
    fn pcm16_round_trip_is_lossless_for_mulaw_values() {
        let mut to = ToPlugin::new(PCM8K).expect("ok");
        let frame: Vec<u8> = (0..160).map(|i| (i as u8).wrapping_mul(7) | 1).collect();
        let mut pcm = Vec::new();
        to.convert(&frame, &mut pcm).expect("ok");
        assert_eq!(pcm.len(), 320);
        let mut from = FromPlugin::new();
        from.push(PCM8K, &pcm).expect("ok");
        // 0x7F (negative zero) decodes to 0, which G.711 encodes as 0xFF; all else is exact.
        let expected: Vec<u8> = frame
            .iter()
            .map(|b| if *b == 0x7F { 0xFF } else { *b })
            .collect();
        assert_eq!(from.next_frame(), Some(&expected[..]));
        assert_eq!(from.next_frame(), None);
    }

    #[test]
    fn reframes_and_pads_before_marks() {
        let mut from = FromPlugin::new();
        from.push(AudioFormat::TWILIO, &[0x10; 250]).expect("ok");
        assert_eq!(from.next_frame().map(<[u8]>::len), Some(160));
        assert_eq!(from.next_frame(), None);
        assert_eq!(from.buffered(), 90);
        let last = from.flush().expect("partial").to_vec();
        assert_eq!(&last[..90], &[0x10; 90][..]);
        assert_eq!(&last[90..], &[mulaw::SILENCE; 70][..]);
        assert_eq!(from.flush(), None);
        from.push(AudioFormat::TWILIO, &[1; 100]).expect("ok");
        from.clear();
        assert_eq!(from.buffered(), 0);
    }

    #[test]
    fn resamples_plugin_audio_at_other_rates() {
        let mut from = FromPlugin::new();
        let pcm24k = vec![0u8; 2 * 24_000]; // 1 s of silence at 24 kHz
        from.push(
            AudioFormat {
                encoding: AudioEncoding::Pcm16,
                sample_rate: 24_000,
            },
            &pcm24k,
        )
        .expect("ok");
        // About 1 s at 8 kHz, less the resampler's latency.
        assert!(
            from.buffered() > 7000 && from.buffered() <= 8000,
            "{}",
            from.buffered()
        );
    }

    #[test]
    fn refuses_unbounded_audio_and_bad_mulaw_rates() {
        let mut from = FromPlugin::new();
        assert!(matches!(
            from.push(AudioFormat::TWILIO, &vec![0; MAX_PENDING_BYTES + 1]),
            Err(ConvertError::TooMuchAudio)
        ));
        let mulaw16k = AudioFormat {
            encoding: AudioEncoding::Mulaw,
            sample_rate: 16_000,
        };
        assert!(matches!(
            from.push(mulaw16k, &[0; 10]),
            Err(ConvertError::MulawRate(16_000))
        ));
        assert!(ToPlugin::new(mulaw16k).is_err());
    }
}
