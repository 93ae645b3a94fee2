//! The log-mel spectrogram Whisper's encoder reads, computed exactly as OpenAI's
//! `whisper.audio.log_mel_spectrogram` does: a 400-point STFT (periodic Hann window, 160-sample
//! hop, centred frames with reflect padding) of 16 kHz audio zero-padded to 30 s, power spectrum,
//! the 80-band Slaney mel filter bank (librosa's `filters.mel(sr=16000, n_fft=400, n_mels=80)`,
//! the matrix Whisper ships as `mel_filters.npz`, recomputed here), `log10`, clamped to 8
//! (80 dB) below the loudest value and scaled by `(x + 4) / 4`.
//!
//! The DFT is two matrix products (frames × windowed cos/sin tables) on candle's optimised
//! matmul, so the spectrogram of a 30 s window costs a few milliseconds.

use candle_core::{Device, Tensor};

/// Sample rate Whisper was trained on (Hz).
pub const SAMPLE_RATE: u32 = 16_000;
/// STFT window and FFT size (samples, 25 ms at 16 kHz).
pub const N_FFT: usize = 400;
/// STFT hop (samples, 10 ms at 16 kHz): one mel frame per hop.
pub const HOP: usize = 160;
/// Frequency bins of one STFT frame (DC to Nyquist).
pub const N_FREQS: usize = N_FFT / 2 + 1;
/// Whisper's input window (samples): 30 s at 16 kHz. Shorter audio is padded with silence to it.
pub const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE as usize;
/// Mel frames in one window (3000; the encoder's two convolutions halve it to 1500 positions).
pub const N_FRAMES: usize = WINDOW_SAMPLES / HOP;

/// The Slaney-style mel filter bank: `n_mels` triangular filters over [`N_FREQS`] STFT bins from
/// 0 Hz to 8 kHz, each normalised to unit area in Hz. Row-major `[n_mels][N_FREQS]`.
pub fn slaney_filters(n_mels: usize) -> Vec<f32> {
    let nyquist = f64::from(SAMPLE_RATE) / 2.0;
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let centres: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let bin_hz = |k: usize| k as f64 * f64::from(SAMPLE_RATE) / N_FFT as f64;
    let mut out = vec![0.0f32; n_mels * N_FREQS];
    for m in 0..n_mels {
        let (left, centre, right) = (centres[m], centres[m + 1], centres[m + 2]);
        let area_norm = 2.0 / (right - left);
        for k in 0..N_FREQS {
            let f = bin_hz(k);
            let rising = (f - left) / (centre - left);
            let falling = (right - f) / (right - centre);
            out[m * N_FREQS + k] = (rising.min(falling).max(0.0) * area_norm) as f32;
        }
    }
    out
}

/// Slaney's mel scale (librosa `htk=False`): linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let log_step = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step
    } else {
        hz / F_SP
    }
}

/// Inverse of [`hz_to_mel`].
fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let log_step = 6.4f64.ln() / 27.0;
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// Computes log-mel spectrograms of one 30 s window; built once per model.
#[derive(Debug, Clone)]
pub struct MelSpectrogram {
    /// `[N_FFT, 2·N_FREQS]`: Hann-windowed cos table then sin table, so `frames × dft` is the
    /// windowed DFT's real and imaginary parts.
    dft: Tensor,
    /// `[N_FREQS, n_mels]`: the filter bank, transposed for `power × filters`.
    filters: Tensor,
    n_mels: usize,
}

impl MelSpectrogram {
    /// Tables for `n_mels` bands (80 for every Whisper but large-v3's 128).
    ///
    /// # Errors
    /// A candle error building the tables (out of memory).
    pub fn new(n_mels: usize, device: &Device) -> candle_core::Result<Self> {
        let mut dft = vec![0.0f32; N_FFT * 2 * N_FREQS];
        for j in 0..N_FFT {
            // Periodic Hann (torch.hann_window's default), as Whisper uses.
            let hann = 0.5 - 0.5 * (std::f64::consts::TAU * j as f64 / N_FFT as f64).cos();
            for k in 0..N_FREQS {
                // j·k mod N keeps the angle small and the table exact to f64 rounding.
                let angle = std::f64::consts::TAU * ((j * k) % N_FFT) as f64 / N_FFT as f64;
                dft[j * 2 * N_FREQS + k] = (hann * angle.cos()) as f32;
                dft[j * 2 * N_FREQS + N_FREQS + k] = (-hann * angle.sin()) as f32;
            }
        }
        let filters = Tensor::from_vec(slaney_filters(n_mels), (n_mels, N_FREQS), device)?
            .t()?
            .contiguous()?;
        Ok(Self {
            dft: Tensor::from_vec(dft, (N_FFT, 2 * N_FREQS), device)?,
            filters,
            n_mels,
        })
    }

    /// The log-mel spectrogram of `samples` (mono, [`SAMPLE_RATE`] Hz, full scale ±1.0; at most
    /// [`WINDOW_SAMPLES`], the rest is ignored), padded with silence to 30 s: shape
    /// `[1, n_mels, N_FRAMES]`, as the encoder wants it.
    ///
    /// # Errors
    /// A candle error (out of memory).
    pub fn compute(&self, samples: &[f32]) -> candle_core::Result<Tensor> {
        let samples = &samples[..samples.len().min(WINDOW_SAMPLES)];
        let frames = frame(samples);
        let frames = Tensor::from_vec(frames, (N_FRAMES, N_FFT), self.dft.device())?;
        let spectrum = frames.matmul(&self.dft)?;
        let re = spectrum.narrow(1, 0, N_FREQS)?;
        let im = spectrum.narrow(1, N_FREQS, N_FREQS)?;
        let power = (re.sqr()? + im.sqr()?)?;
        let mel = power.matmul(&self.filters)?; // [N_FRAMES, n_mels]
        let log = (mel.maximum(1e-10f32)?.log()? * std::f64::consts::LOG10_E)?;
        let floor = log.max_all()?.to_scalar::<f32>()? - 8.0;
        let log = ((log.maximum(floor)? + 4.0)? / 4.0)?;
        log.t()?.contiguous()?.reshape((1, self.n_mels, N_FRAMES))
    }
}

/// The [`N_FRAMES`] STFT frames of `samples` zero-padded to 30 s, row-major `[N_FRAMES][N_FFT]`:
/// frame `t` is centred on sample `t·HOP`; before the start the signal is reflected (torch's
/// `center=True, pad_mode="reflect"`), after the end it is silence.
fn frame(samples: &[f32]) -> Vec<f32> {
    let at = |i: isize| -> f32 {
        let i = if i < 0 { -i } else { i } as usize;
        samples.get(i).copied().unwrap_or(0.0)
    };
    let half = (N_FFT / 2) as isize;
    let mut out = vec![0.0f32; N_FRAMES * N_FFT];
    // Frames past the audio (plus half a window) stay silent.
    let live = (samples.len() + N_FFT).div_ceil(HOP).min(N_FRAMES);
    for t in 0..live {
        let start = (t * HOP) as isize - half;
        for (j, v) in out[t * N_FFT..(t + 1) * N_FFT].iter_mut().enumerate() {
            *v = at(start + j as isize);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_is_linear_below_1khz() {
        for hz in [0.0, 200.0, 999.0, 1000.0, 3000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(500.0) - 7.5).abs() < 1e-12);
    }

    #[test]
    fn filters_are_triangles_of_unit_area_rising_through_the_spectrum() {
        let f = slaney_filters(80);
        assert_eq!(f.len(), 80 * N_FREQS);
        assert!(f.iter().all(|v| *v >= 0.0));
        let peak = |m: usize| {
            (0..N_FREQS)
                .max_by(|a, b| f[m * N_FREQS + a].total_cmp(&f[m * N_FREQS + b]))
                .unwrap()
        };
        for m in 1..80 {
            assert!(
                peak(m) >= peak(m - 1),
                "band {m} peaks below band {}",
                m - 1
            );
        }
        // Wide (high) bands span enough 40 Hz bins that the sum approximates the unit area.
        let area = |m: usize| f[m * N_FREQS..(m + 1) * N_FREQS].iter().sum::<f32>() * 40.0;
        for m in 40..80 {
            assert!((area(m) - 1.0).abs() < 0.1, "band {m} area {}", area(m));
        }
        let mean = (40..80).map(area).sum::<f32>() / 40.0;
        assert!((mean - 1.0).abs() < 0.02, "mean area {mean}");
        // librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)[0, 1] (the band's only non-zero
        // bin: its centre at 36.8 Hz, 40 Hz past its left edge at 0 Hz).
        assert!((f[1] - 0.024_862_59).abs() < 1e-6, "{}", f[1]);
    }

    #[test]
    fn a_tone_lights_the_band_at_its_frequency_and_silence_is_flat() {
        let mel = MelSpectrogram::new(80, &Device::Cpu).unwrap();
        let tone: Vec<f32> = (0..SAMPLE_RATE as usize)
            .map(|i| 0.5 * (std::f32::consts::TAU * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let spec = mel.compute(&tone).unwrap();
        assert_eq!(spec.dims(), &[1, 80, N_FRAMES]);
        // Frame 50 (0.5 s) is inside the tone.
        let column: Vec<f32> = spec
            .get(0)
            .unwrap()
            .t()
            .unwrap()
            .get(50)
            .unwrap()
            .to_vec1()
            .unwrap();
        let loudest = (0..80)
            .max_by(|a, b| column[*a].total_cmp(&column[*b]))
            .unwrap();
        // 1 kHz is 15 mel; bands are 45.2 / 81 = 0.56 mel apart, so band 26 is centred on it.
        assert!((25..=27).contains(&loudest), "loudest band {loudest}");
        // After the tone: the floor, 8 below the loudest value, scaled.
        let max = spec.max_all().unwrap().to_scalar::<f32>().unwrap();
        let last: Vec<f32> = spec
            .get(0)
            .unwrap()
            .t()
            .unwrap()
            .get(2999)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            last.iter().all(|v| (v - (max - 2.0)).abs() < 1e-4),
            "{last:?}"
        );

        let silent = mel.compute(&[0.0; 1600]).unwrap();
        let values: Vec<f32> = silent.flatten_all().unwrap().to_vec1().unwrap();
        assert!(values.iter().all(|v| (v - values[0]).abs() < 1e-6));
    }

    #[test]
    fn frames_reflect_at_the_start_and_pad_with_silence() {
        let samples: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let frames = frame(&samples);
        // Frame 0 is centred on sample 0: [200, 199, …, 1, 0, 1, …, 199].
        assert_eq!(frames[0], 200.0);
        assert_eq!(frames[199], 1.0);
        assert_eq!(frames[200], 0.0);
        assert_eq!(frames[399], 199.0);
        // Frame 6 is centred on sample 960: it ends at 1159, past the audio.
        assert_eq!(frames[6 * N_FFT + 239], 999.0);
        assert_eq!(frames[6 * N_FFT + 240], 0.0);
        assert!(frames[10 * N_FFT..].iter().all(|v| *v == 0.0));
    }
}
