//! Phone-line noise for tests and benches, mixed in code so every run hears the same audio:
//! pink noise (hiss, air conditioning), babble (other people talking: the project's own speech
//! fixtures overlaid) and street noise (a low rumble with passing swells). All generators are
//! deterministic (xorshift sources with fixed seeds) and return 8 kHz PCM16.

use std::path::Path;

/// Samples per second of everything here (Hz): Twilio's.
pub const RATE: usize = 8000;

/// A deterministic white source in −1..1 (xorshift32).
struct White(u32);

impl White {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        f64::from(self.0) / f64::from(u32::MAX) * 2.0 - 1.0
    }
}

/// RMS level of `pcm` in dBFS (full scale 32768); −inf for silence.
pub fn dbfs(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return f64::NEG_INFINITY;
    }
    let power = pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64;
    10.0 * (power / 32768f64.powi(2)).log10()
}

/// RMS level in dBFS of the voiced part of `pcm`: the 20 ms blocks within 30 dB of the loudest,
/// so leading and trailing silence does not lower a recording's speech level (the level an SNR
/// is quoted against).
pub fn speech_dbfs(pcm: &[i16]) -> f64 {
    let blocks: Vec<f64> = pcm.chunks(RATE / 50).map(dbfs).collect();
    let loudest = blocks.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let voiced: Vec<&[i16]> = pcm
        .chunks(RATE / 50)
        .zip(&blocks)
        .filter(|(_, db)| **db > loudest - 30.0)
        .map(|(c, _)| c)
        .collect();
    dbfs(&voiced.concat())
}

/// `raw` scaled to `level` dBFS RMS and rounded to PCM16 (clipped).
fn scaled(raw: &[f64], level: f64) -> Vec<i16> {
    let rms = (raw.iter().map(|v| v * v).sum::<f64>() / raw.len().max(1) as f64).sqrt();
    if rms == 0.0 {
        return vec![0; raw.len()];
    }
    let gain = 32768.0 * 10f64.powf(level / 20.0) / rms;
    raw.iter()
        .map(|v| (v * gain).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// `n` samples of pink noise (−3 dB per octave; Paul Kellet's refined filter) at `level` dBFS RMS.
pub fn pink(n: usize, level: f64) -> Vec<i16> {
    let mut white = White(0x2545_F491);
    let mut b = [0f64; 7];
    let raw: Vec<f64> = (0..n)
        .map(|_| {
            let w = white.next();
            b[0] = 0.99886 * b[0] + w * 0.0555179;
            b[1] = 0.99332 * b[1] + w * 0.0750759;
            b[2] = 0.96900 * b[2] + w * 0.1538520;
            b[3] = 0.86650 * b[3] + w * 0.3104856;
            b[4] = 0.55000 * b[4] + w * 0.5329522;
            b[5] = -0.7616 * b[5] - w * 0.0168980;
            let out = b.iter().sum::<f64>() + w * 0.5362;
            b[6] = w * 0.115926;
            out
        })
        .collect();
    scaled(&raw, level)
}

/// `n` samples of street noise at `level` dBFS RMS: brown (−6 dB per octave) rumble of traffic
/// with slow swells of a few seconds as vehicles pass, over a little pink hiss.
pub fn street(n: usize, level: f64) -> Vec<i16> {
    let mut white = White(0x9E37_79B9);
    let hiss = pink(n, -20.0);
    let mut brown = 0f64;
    let raw: Vec<f64> = (0..n)
        .map(|i| {
            brown = (brown + white.next() * 0.02) * 0.998;
            let t = i as f64 / RATE as f64;
            let swell = 1.0 + 0.6 * (2.0 * std::f64::consts::PI * t / 3.7).sin().max(0.0);
            brown * swell * 8.0 + f64::from(hiss[i]) / 32768.0 * 0.3
        })
        .collect();
    scaled(&raw, level)
}

/// `n` samples of babble at `level` dBFS RMS: the recordings in `voices` (8 kHz PCM16 WAV files)
/// looped and overlaid, each from a different offset, so no one voice stands out.
///
/// # Errors
/// A recording could not be read.
pub fn babble(n: usize, level: f64, voices: &[&Path]) -> anyhow::Result<Vec<i16>> {
    let mut raw = vec![0f64; n];
    for (v, path) in voices.iter().enumerate() {
        let pcm = switchboard::simulate::read_wav(path)?;
        if pcm.is_empty() {
            continue;
        }
        let offset = (v * 7919) % pcm.len();
        for (i, out) in raw.iter_mut().enumerate() {
            *out += f64::from(pcm[(offset + i) % pcm.len()]);
        }
    }
    Ok(scaled(&raw, level))
}

/// `speech` with `noise` added from sample `at` of the result (the noise may start before the
/// speech: `lead` samples of noise alone come first, and the result is as long as the longer
/// of the two). Sums are clipped to PCM16.
pub fn mix(speech: &[i16], lead: usize, noise: &[i16]) -> Vec<i16> {
    let len = (lead + speech.len()).max(noise.len());
    let mut out = vec![0i16; len];
    for (o, s) in out[lead..].iter_mut().zip(speech) {
        *o = *s;
    }
    for (o, n) in out.iter_mut().zip(noise) {
        *o = o.saturating_add(*n);
    }
    out
}

/// The noise level (dBFS) that puts it `snr_db` below the voiced level of `speech`.
pub fn level_for_snr(speech: &[i16], snr_db: f64) -> f64 {
    speech_dbfs(speech) - snr_db
}

/// PCM16 as 20 ms G.711 μ-law frames (the last padded with μ-law silence), as Twilio carries it.
pub fn frames(pcm: &[i16]) -> Vec<Vec<u8>> {
    pcm.chunks(RATE / 50)
        .map(|c| {
            let mut frame: Vec<u8> = c
                .iter()
                .map(|&s| switchboard::audio::mulaw::encode(s))
                .collect();
            frame.resize(RATE / 50, switchboard::audio::mulaw::SILENCE);
            frame
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_hit_their_level() {
        for (name, pcm) in [
            ("pink", pink(RATE * 4, -41.0)),
            ("street", street(RATE * 4, -35.0)),
        ] {
            let level = dbfs(&pcm);
            let want = if name == "pink" { -41.0 } else { -35.0 };
            assert!((level - want).abs() < 0.2, "{name} at {level:.1} dBFS");
        }
        let voices = [crate::fixture("speech/beckett.wav")];
        let paths: Vec<&Path> = voices.iter().map(|p| p.as_path()).collect();
        let b = babble(RATE * 4, -30.0, &paths).expect("babble");
        assert!((dbfs(&b) + 30.0).abs() < 0.2);
    }

    #[test]
    fn mixing_places_speech_after_the_lead() {
        let speech = vec![1000i16; 10];
        let noise = vec![1i16; 30];
        let out = mix(&speech, 5, &noise);
        assert_eq!(out.len(), 30);
        assert_eq!(out[4], 1);
        assert_eq!(out[5], 1001);
        assert_eq!(out[15], 1);
        assert!((level_for_snr(&speech, 20.0) - (dbfs(&speech) - 20.0)).abs() < 1e-9);
    }
}
