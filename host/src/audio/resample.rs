//! Sample-rate conversion for mono PCM16 audio between the Twilio leg and
//! plugins.
//!
//! Twilio speaks 8 kHz; speech models and TTS engines commonly want or
//! produce 16 kHz or 24 kHz. This module owns that conversion: a streaming
//! [`Resampler`] for one direction of one call (push any number of samples,
//! get back whatever output is ready) and a one-shot, time-aligned
//! [`resample_all`] for whole clips. Nothing here knows about μ-law
//! (see `audio::mulaw`), framing or timing.
//!
//! The engine is rubato's synchronous FFT resampler ([`rubato::Fft`]): call
//! audio has fixed, rationally related rates, so no drift-tracking
//! asynchronous resampler is needed, and the FFT resampler gives sinc-quality
//! band limiting (Blackman-Harris² windowed anti-aliasing filter) at a small
//! fraction of the CPU cost of a time-domain sinc resampler. Audio is
//! processed in blocks of [`BLOCK_MS`] of input, which matches Twilio's 20 ms
//! packetization so a 20 ms frame in yields output immediately, and puts the
//! filter cutoff at ≈ 92 % of the lower Nyquist frequency (≈ 3.66 kHz for an
//! 8 kHz side), comfortably above the 300–3400 Hz telephone speech band.
//! The price is a fixed filter delay of half a block (10 ms for standard
//! rates), reported by [`Resampler::delay_samples`] and compensated by
//! [`resample_all`].

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _, WindowFunction};

/// Lowest accepted sample rate, in Hz.
///
/// Lower than any real audio rate (telephony starts at 8000 Hz); its purpose
/// is to reject unit mistakes such as passing kHz (`8`) instead of Hz.
pub const MIN_RATE_HZ: u32 = 1_000;

/// Highest accepted sample rate, in Hz.
///
/// The highest rate common audio hardware and codecs use. It bounds the FFT
/// block, and so memory and delay, for pathological rate pairs.
pub const MAX_RATE_HZ: u32 = 192_000;

/// Target length of one processing block, in milliseconds of input.
///
/// Equal to Twilio's 20 ms media frame so streaming one frame at a time
/// produces output on every call. The filter delay is half a block and the
/// anti-aliasing cutoff rises with block length; 20 ms balances the two for
/// speech. The actual block is rounded up to a whole number of the rate
/// pair's minimum blocks (see [`Resampler::new`]).
pub const BLOCK_MS: u32 = 20;

/// Number of audio channels handled: call audio is mono.
const CHANNELS: usize = 1;

/// Scale between PCM16 and rubato's `f32` samples (full scale = 1.0).
const PCM16_SCALE: f32 = 32_768.0;

/// Errors from building or running a [`Resampler`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    /// A sample rate outside [`MIN_RATE_HZ`]`..=`[`MAX_RATE_HZ`].
    #[error("unsupported sample rate {hz} Hz (supported: {MIN_RATE_HZ}..={MAX_RATE_HZ} Hz)")]
    UnsupportedRate {
        /// The rejected rate, in Hz.
        hz: u32,
    },
    /// rubato refused to build a resampler for this rate pair.
    #[error("cannot build resampler {from_hz} Hz -> {to_hz} Hz: {message}")]
    Construction {
        /// Input rate, in Hz.
        from_hz: u32,
        /// Output rate, in Hz.
        to_hz: u32,
        /// rubato's error message.
        message: String,
    },
    /// rubato (or its buffer adapter) failed while processing a block.
    #[error("resampling {from_hz} Hz -> {to_hz} Hz failed: {message}")]
    Processing {
        /// Input rate, in Hz.
        from_hz: u32,
        /// Output rate, in Hz.
        to_hz: u32,
        /// rubato's error message.
        message: String,
    },
}

/// Streaming sample-rate converter for one direction of one call: mono
/// PCM16 at `from_hz` in, mono PCM16 at `to_hz` out.
///
/// Input of any length can be pushed with [`process`](Self::process); input
/// that does not yet fill a block is kept until the next call. Output is
/// delayed by [`delay_samples`](Self::delay_samples) output samples (the
/// stream starts with that much filter warm-up) and over a whole stream the
/// output count converges on `input * to_hz / from_hz`.
/// [`flush`](Self::flush) drains the tail at the end of an utterance.
///
/// When `from_hz == to_hz` the converter is a pass-through with no delay.
#[derive(Debug)]
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    /// `None` for pass-through.
    engine: Option<Engine>,
}

/// The rubato state of a converting [`Resampler`].
#[derive(Debug)]
struct Engine {
    fft: Fft<f32>,
    /// Input samples per block.
    block_in: usize,
    /// Output samples per block.
    block_out: usize,
    /// Input received but not yet processed (fewer than `block_in` between calls).
    pending: Vec<f32>,
    /// One block of output, reused between calls.
    scratch: Vec<f32>,
    /// Input samples received since construction or the last flush.
    total_in: u64,
    /// Output samples emitted since construction or the last flush.
    total_out: u64,
}

impl Resampler {
    /// Creates a converter from `from_hz` to `to_hz` (both in Hz).
    ///
    /// Equal rates give a pass-through. Otherwise the processing block is
    /// [`BLOCK_MS`] of input rounded up to an even multiple of the rate
    /// pair's minimum block (`rate / gcd(from_hz, to_hz)` samples on each
    /// side), so the filter delay is a whole number of output samples:
    /// 8000 → 16000 Hz uses 160 → 320 sample blocks with a 160-sample
    /// (10 ms) delay. Rate pairs with a tiny GCD (e.g. 8001 → 8000 Hz) get
    /// blocks of up to 2 s and a proportionally longer delay.
    ///
    /// # Errors
    ///
    /// [`ResampleError::UnsupportedRate`] if either rate is outside
    /// [`MIN_RATE_HZ`]`..=`[`MAX_RATE_HZ`];
    /// [`ResampleError::Construction`] if rubato rejects the configuration.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, ResampleError> {
        for hz in [from_hz, to_hz] {
            if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&hz) {
                return Err(ResampleError::UnsupportedRate { hz });
            }
        }
        if from_hz == to_hz {
            return Ok(Self {
                from_hz,
                to_hz,
                engine: None,
            });
        }
        let from = from_hz as usize;
        let to = to_hz as usize;
        let min_block_in = from / gcd(from, to);
        let target_in = from * BLOCK_MS as usize / 1000;
        let mut blocks = target_in.div_ceil(min_block_in).max(1);
        // The sinc kernel is centred on sample block_in / 2; an even block on
        // both sides keeps that centre on a whole output sample.
        if blocks % 2 == 1 {
            blocks += 1;
        }
        let block_in = blocks * min_block_in;
        let fft = Fft::<f32>::new_custom(
            from,
            to,
            block_in,
            1,
            CHANNELS,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )
        .map_err(|e| ResampleError::Construction {
            from_hz,
            to_hz,
            message: e.to_string(),
        })?;
        let block_in = fft.input_frames_next();
        let block_out = fft.output_frames_next();
        Ok(Self {
            from_hz,
            to_hz,
            engine: Some(Engine {
                fft,
                block_in,
                block_out,
                pending: Vec::with_capacity(block_in),
                scratch: vec![0.0; block_out],
                total_in: 0,
                total_out: 0,
            }),
        })
    }

    /// Input rate, in Hz.
    #[must_use]
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate, in Hz.
    #[must_use]
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Output delay of the filter, in output samples: an impulse at input
    /// sample `n` peaks at output sample `n * to_hz / from_hz + delay`.
    /// Half an output block (e.g. 160 samples = 10 ms for 8 → 16 kHz);
    /// 0 for a pass-through.
    #[must_use]
    pub fn delay_samples(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.fft.output_delay())
    }

    /// Pushes `input` (mono PCM16 samples at `from_hz`) and appends every
    /// output sample (at `to_hz`) that is ready to `out`.
    ///
    /// Output comes in whole blocks, so a call may append nothing (input kept
    /// for the next call) or several blocks. A pass-through appends `input`
    /// unchanged. Results are independent of how the input is split across
    /// calls.
    ///
    /// # Errors
    ///
    /// [`ResampleError::Processing`] if rubato fails on a block (not expected
    /// with the buffer sizes used here); the converter should then be dropped.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), ResampleError> {
        let (from_hz, to_hz) = (self.from_hz, self.to_hz);
        let Some(engine) = self.engine.as_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        engine.total_in += input.len() as u64;
        engine
            .pending
            .extend(input.iter().map(|&s| f32::from(s) / PCM16_SCALE));
        out.reserve(engine.pending.len() / engine.block_in * engine.block_out);
        let mut offset = 0;
        while engine.pending.len() - offset >= engine.block_in {
            engine
                .run_block(offset)
                .map_err(|message| ResampleError::Processing {
                    from_hz,
                    to_hz,
                    message,
                })?;
            engine.emit(engine.block_out, out);
            offset += engine.block_in;
        }
        engine.pending.drain(..offset);
        Ok(())
    }

    /// Ends the stream: pads the buffered input with silence, appends the
    /// remaining output to `out`, and resets the converter for a new stream.
    ///
    /// After a flush, the total output since construction (or the previous
    /// flush) is `delay_samples() + ceil(total_input * to_hz / from_hz)`
    /// samples, so every input sample's contribution has been emitted. A
    /// pass-through appends nothing.
    ///
    /// # Errors
    ///
    /// [`ResampleError::Processing`] if rubato fails on a block.
    pub fn flush(&mut self, out: &mut Vec<i16>) -> Result<(), ResampleError> {
        let (from_hz, to_hz) = (self.from_hz, self.to_hz);
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        let scaled = u128::from(engine.total_in) * u128::from(to_hz);
        let needed = scaled.div_ceil(u128::from(from_hz));
        let target = u64::try_from(needed)
            .unwrap_or(u64::MAX)
            .saturating_add(engine.fft.output_delay() as u64);
        while engine.total_out < target {
            // `pending` always holds less than one block here.
            engine.pending.resize(engine.block_in, 0.0);
            engine
                .run_block(0)
                .map_err(|message| ResampleError::Processing {
                    from_hz,
                    to_hz,
                    message,
                })?;
            engine.pending.clear();
            let wanted = usize::try_from(target - engine.total_out).unwrap_or(usize::MAX);
            engine.emit(wanted.min(engine.block_out), out);
        }
        engine.fft.reset();
        engine.pending.clear();
        engine.total_in = 0;
        engine.total_out = 0;
        Ok(())
    }
}

impl Engine {
    /// Resamples the block of `pending` starting at `offset` into `scratch`.
    fn run_block(&mut self, offset: usize) -> Result<(), String> {
        let input = InterleavedSlice::new(&self.pending, CHANNELS, self.pending.len())
            .map_err(|e| e.to_string())?;
        let mut output = InterleavedSlice::new_mut(&mut self.scratch, CHANNELS, self.block_out)
            .map_err(|e| e.to_string())?;
        let indexing = Indexing::new().input_offset(offset);
        self.fft
            .process_into_buffer(&input, &mut output, Some(&indexing))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Appends the first `count` samples of `scratch` to `out` as PCM16.
    fn emit(&mut self, count: usize, out: &mut Vec<i16>) {
        out.extend(self.scratch.iter().take(count).map(|&x| to_pcm16(x)));
        self.total_out += count as u64;
    }
}

/// Converts a float sample (full scale 1.0) to PCM16, rounding and clamping.
fn to_pcm16(x: f32) -> i16 {
    // Float-to-int `as` saturates (NaN -> 0), the clamp documents intent.
    (x * PCM16_SCALE)
        .round()
        .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Resamples a whole clip of mono PCM16 from `from_hz` to `to_hz` (Hz) and
/// returns exactly `round(input.len() * to_hz / from_hz)` samples,
/// time-aligned with the input: the filter delay is removed, so input
/// sample `n` corresponds to output sample `n * to_hz / from_hz`.
///
/// # Errors
///
/// Same as [`Resampler::new`] and [`Resampler::process`].
pub fn resample_all(input: &[i16], from_hz: u32, to_hz: u32) -> Result<Vec<i16>, ResampleError> {
    let mut resampler = Resampler::new(from_hz, to_hz)?;
    let scaled = input.len() as u128 * u128::from(to_hz);
    let from = u128::from(from_hz);
    // Round half up; from_hz >= MIN_RATE_HZ so the division is defined.
    let expected = usize::try_from((scaled + from / 2) / from).unwrap_or(usize::MAX);
    let delay = resampler.delay_samples();
    let mut out = Vec::with_capacity(expected.saturating_add(delay));
    resampler.process(input, &mut out)?;
    resampler.flush(&mut out)?;
    // flush() emitted delay + ceil(len * ratio) >= delay + expected samples.
    out.drain(..delay.min(out.len()));
    out.truncate(expected);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    fn sine(freq_hz: f64, rate_hz: u32, len: usize, amplitude: f64) -> Vec<i16> {
        (0..len)
            .map(|n| {
                (amplitude * (TAU * freq_hz * n as f64 / f64::from(rate_hz)).sin()).round() as i16
            })
            .collect()
    }

    /// Least-squares fit of `a*sin + b*cos` at `freq_hz` over `signal`;
    /// returns (amplitude, phase in radians, residual RMS).
    fn fit_tone(signal: &[i16], freq_hz: f64, rate_hz: u32) -> (f64, f64, f64) {
        let w = TAU * freq_hz / f64::from(rate_hz);
        let (mut s, mut c) = (0.0, 0.0);
        for (n, &x) in signal.iter().enumerate() {
            s += f64::from(x) * (w * n as f64).sin();
            c += f64::from(x) * (w * n as f64).cos();
        }
        let len = signal.len() as f64;
        let (a, b) = (2.0 * s / len, 2.0 * c / len);
        let residual: f64 = signal
            .iter()
            .enumerate()
            .map(|(n, &x)| {
                let fitted = a * (w * n as f64).sin() + b * (w * n as f64).cos();
                (f64::from(x) - fitted).powi(2)
            })
            .sum();
        (a.hypot(b), b.atan2(a), (residual / len).sqrt())
    }

    fn rms(signal: &[i16]) -> f64 {
        let sum: f64 = signal.iter().map(|&x| f64::from(x).powi(2)).sum();
        (sum / signal.len() as f64).sqrt()
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    /// Counts sign changes (from negative to non-negative).
    fn rising_zero_crossings(signal: &[i16]) -> usize {
        signal.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count()
    }

    #[test]
    fn pass_through_is_identity() {
        let input = sine(440.0, 8000, 1000, 12000.0);
        let mut r = Resampler::new(8000, 8000).unwrap();
        assert_eq!(r.delay_samples(), 0);
        let mut out = vec![5];
        r.process(&input, &mut out).unwrap();
        r.flush(&mut out).unwrap();
        assert_eq!(out[0], 5);
        assert_eq!(&out[1..], &input[..]);
        assert_eq!(resample_all(&input, 16000, 16000).unwrap(), input);
    }

    #[test]
    fn rejects_unsupported_rates() {
        for (from, to, bad) in [
            (0, 8000, 0),
            (8000, 0, 0),
            (8, 16000, 8),
            (8000, 192_001, 192_001),
        ] {
            assert_eq!(
                Resampler::new(from, to).unwrap_err(),
                ResampleError::UnsupportedRate { hz: bad }
            );
        }
        assert!(resample_all(&[1, 2, 3], 0, 8000).is_err());
        assert!(Resampler::new(MIN_RATE_HZ, MAX_RATE_HZ).is_ok());
        let msg = ResampleError::UnsupportedRate { hz: 0 }.to_string();
        assert_eq!(
            msg,
            "unsupported sample rate 0 Hz (supported: 1000..=192000 Hz)"
        );
    }

    #[test]
    fn block_and_delay_for_telephony_rates() {
        // (from, to, delay in output samples): half a 20 ms output block.
        for (from, to, delay) in [
            (8000, 16000, 160),
            (16000, 8000, 80),
            (8000, 24000, 240),
            (24000, 8000, 80),
            (16000, 24000, 240),
            (8000, 48000, 480),
            (44100, 8000, 80),
        ] {
            let r = Resampler::new(from, to).unwrap();
            assert_eq!(r.delay_samples(), delay, "{from} -> {to}");
            assert_eq!((r.from_hz(), r.to_hz()), (from, to));
        }
    }

    #[test]
    fn resampler_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Resampler>();
    }

    fn check_upsampled_tone(to_hz: u32) {
        let amplitude = 10000.0;
        let seconds = 1.0;
        let input = sine(1000.0, 8000, (8000.0 * seconds) as usize, amplitude);
        let out = resample_all(&input, 8000, to_hz).unwrap();
        assert_eq!(out.len(), (f64::from(to_hz) * seconds) as usize);
        // Skip 20 ms at each edge (filter ramp against the implicit silence).
        let edge = (to_hz / 50) as usize;
        let body = &out[edge..out.len() - edge];
        let (amp, phase, residual) = fit_tone(body, 1000.0, to_hz);
        assert!(db(amp / amplitude).abs() < 1.0, "{to_hz}: amplitude {amp}");
        assert!(residual < amplitude * 0.01, "{to_hz}: residual {residual}");
        // Time alignment: the body starts at t = edge / to_hz, where the
        // ideal sine has phase 2*pi*1000*edge/to_hz.
        let ideal = TAU * 1000.0 * edge as f64 / f64::from(to_hz);
        let err = (phase - ideal).rem_euclid(TAU);
        let err = err.min(TAU - err);
        assert!(err < 0.05, "{to_hz}: phase error {err} rad");
        // 1 kHz for 1 s: 1000 rising zero crossings (± edge effects).
        let crossings = rising_zero_crossings(&out);
        assert!(
            (999..=1001).contains(&crossings),
            "{to_hz}: {crossings} crossings"
        );
    }

    #[test]
    fn upsampling_8k_to_16k_keeps_1khz_tone() {
        check_upsampled_tone(16000);
    }

    #[test]
    fn upsampling_8k_to_24k_keeps_1khz_tone() {
        check_upsampled_tone(24000);
    }

    #[test]
    fn downsampling_16k_to_8k_keeps_3khz_and_rejects_6khz() {
        let amplitude = 16000.0;
        let pass = resample_all(&sine(3000.0, 16000, 16000, amplitude), 16000, 8000).unwrap();
        let stop = resample_all(&sine(6000.0, 16000, 16000, amplitude), 16000, 8000).unwrap();
        assert_eq!(pass.len(), 8000);
        assert_eq!(stop.len(), 8000);
        let body = 160..7840;
        let (amp, _, _) = fit_tone(&pass[body.clone()], 3000.0, 8000);
        assert!(db(amp / amplitude).abs() < 1.0, "3 kHz amplitude {amp}");
        let input_rms = amplitude / 2f64.sqrt();
        let attenuation = db(rms(&stop[body]) / input_rms);
        assert!(
            attenuation < -30.0,
            "6 kHz only attenuated {attenuation} dB"
        );
    }

    #[test]
    fn streaming_in_20ms_frames_matches_one_call() {
        let input: Vec<i16> = sine(700.0, 8000, 8000, 9000.0)
            .iter()
            .zip(sine(2300.0, 8000, 8000, 6000.0))
            .map(|(a, b)| a.saturating_add(b))
            .collect();
        for to_hz in [16000, 24000] {
            let mut whole = Vec::new();
            let mut r = Resampler::new(8000, to_hz).unwrap();
            r.process(&input, &mut whole).unwrap();
            r.flush(&mut whole).unwrap();

            let mut chunked = Vec::new();
            let mut r = Resampler::new(8000, to_hz).unwrap();
            for frame in input.chunks(160) {
                let before = chunked.len();
                r.process(frame, &mut chunked).unwrap();
                // One full 20 ms block in -> one block out, immediately.
                assert_eq!(chunked.len() - before, 160 * (to_hz / 8000) as usize);
            }
            r.flush(&mut chunked).unwrap();

            assert_eq!(whole.len(), chunked.len());
            let max_diff = whole
                .iter()
                .zip(&chunked)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .max();
            assert!(matches!(max_diff, Some(0..=1)), "{to_hz}: {max_diff:?}");
            // The stream really carries the signal, not silence.
            assert!(rms(&whole) > 5000.0);
        }
    }

    #[test]
    fn odd_sized_pushes_buffer_leftover_input() {
        let input = sine(500.0, 16000, 5000, 8000.0);
        let mut expected = Vec::new();
        let mut r = Resampler::new(16000, 8000).unwrap();
        r.process(&input, &mut expected).unwrap();
        r.flush(&mut expected).unwrap();

        let mut got = Vec::new();
        let mut r = Resampler::new(16000, 8000).unwrap();
        r.process(&input[..7], &mut got).unwrap();
        assert!(got.is_empty(), "less than a block must wait");
        for chunk in input[7..].chunks(333) {
            r.process(chunk, &mut got).unwrap();
        }
        r.flush(&mut got).unwrap();
        assert_eq!(got, expected);
        // delay + ceil(5000 / 2)
        assert_eq!(got.len(), 80 + 2500);
    }

    #[test]
    fn flush_resets_for_next_stream() {
        let input = sine(1000.0, 8000, 1234, 8000.0);
        let mut r = Resampler::new(8000, 16000).unwrap();
        let mut first = Vec::new();
        r.process(&input, &mut first).unwrap();
        r.flush(&mut first).unwrap();
        let mut second = Vec::new();
        r.process(&input, &mut second).unwrap();
        r.flush(&mut second).unwrap();
        assert_eq!(first.len(), 160 + 2468);
        assert_eq!(first, second);
    }

    #[test]
    fn resample_all_length_is_exact() {
        for (len, from, to, expected) in [
            (0, 8000, 16000, 0),
            (1, 8000, 16000, 2),
            (160, 8000, 24000, 480),
            (1001, 16000, 8000, 501), // 500.5 rounds up
            (1003, 24000, 8000, 334), // 334.33 rounds down
            (5, 44100, 8000, 1),      // 0.907 rounds up
            (44100, 44100, 16000, 16000),
        ] {
            let out = resample_all(&vec![100; len], from, to).unwrap();
            assert_eq!(out.len(), expected, "{len} @ {from} -> {to}");
        }
    }

    #[test]
    fn resample_all_is_time_aligned() {
        for (from, to) in [
            (8000, 16000),
            (8000, 24000),
            (16000, 8000),
            (24000, 16000),
            (44100, 8000),
        ] {
            for n in [0usize, 1, 37, 1000, 2901, 2990] {
                let mut input = vec![0i16; 3000];
                input[n] = 30000;
                let out = resample_all(&input, from, to).unwrap();
                let peak = out
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, v)| i32::from(**v))
                    .map(|(i, _)| i);
                let ideal = n as f64 * f64::from(to) / f64::from(from);
                let Some(peak) = peak else {
                    panic!("empty output");
                };
                assert!(
                    (peak as f64 - ideal).abs() <= 1.0,
                    "{from} -> {to}: click at {n} landed at {peak}, want {ideal}"
                );
            }
        }
    }

    #[test]
    fn clamps_on_the_way_back() {
        // A full-scale square wave overshoots (Gibbs) after band limiting;
        // the output must saturate, not wrap around.
        let input: Vec<i16> = (0..4000)
            .map(|n| {
                if (n / 20) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let out = resample_all(&input, 8000, 16000).unwrap();
        assert!(out.contains(&i16::MAX));
        assert!(out.contains(&i16::MIN));
        // No wrap-around: around each high plateau centre the output stays high.
        for k in (2..98).step_by(2) {
            let centre = (k * 20 + 10) * 2;
            assert!(out[centre] > 30000, "sample {centre} = {}", out[centre]);
        }
    }

    #[test]
    fn error_messages_carry_rubato_text() {
        let e = ResampleError::Processing {
            from_hz: 8000,
            to_hz: 16000,
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "resampling 8000 Hz -> 16000 Hz failed: boom");
    }
}
