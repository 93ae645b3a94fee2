//! ITU-T G.711 μ-law codec for the Twilio leg of a call.
//!
//! Twilio Media Streams carry audio as 8 kHz mono μ-law (`audio/x-mulaw`),
//! one byte per sample, while plugins exchange linear PCM16. This module owns
//! the conversion between the two and nothing else: no resampling (see
//! `audio::resample`), no framing, no base64.
//!
//! The rules are those of ITU-T G.711 as implemented by the widely used Sun
//! Microsystems reference `g711.c` (`ulaw2linear` / `linear2ulaw`, 16-bit
//! linear input, bias `0x84`, clip at 32635, all bits inverted on the wire).
//! Both directions are table-driven with tables built at compile time by
//! `const fn`s, so the hot path is one load per sample and there is no
//! start-up cost and no `unsafe`.

/// μ-law code for linear 0: the byte to send for silence.
///
/// The reference encoder maps 0 to `0xFF` ("positive zero"). `0x7F`
/// ("negative zero") also decodes to 0 but is never produced for input 0.
pub const SILENCE: u8 = 0xFF;

/// Bias added to the linear magnitude before segment search (ITU-T G.711,
/// Sun `g711.c` `BIAS`). It makes the segment boundaries fall on powers of
/// two: `magnitude + BIAS` has its top set bit in position `segment + 7`.
const BIAS: u32 = 0x84;

/// Largest linear magnitude the encoder represents (Sun `g711.c` `CLIP`).
///
/// `CLIP + BIAS == 0x7FFF`, the top of segment 7; anything louder is
/// clipped to the loudest code instead of overflowing the 15-bit range.
const CLIP: u32 = 32635;

/// Right shift that turns a biased magnitude into an encoder-table index.
///
/// The quantization step in the finest segment (0) is 8 linear units, so the
/// three low bits of `magnitude + BIAS` never affect the code. Dropping them
/// shrinks the table to [`ENCODE_TABLE_LEN`] entries.
const ENCODE_SHIFT: u32 = 3;

/// Entries in the encoder table: every `(magnitude + BIAS) >> ENCODE_SHIFT`
/// for magnitudes in `0..=CLIP`, i.e. `0..=0x7FFF >> 3`.
///
/// 4096 one-byte entries (4 KiB) stay resident in L1 cache next to the
/// 512-byte decoder table, which is why this layout was chosen over a
/// 64 Ki-entry table indexed by the raw sample (64 KiB, spills L1 for no
/// gain) or a per-sample segment search (data-dependent branches).
const ENCODE_TABLE_LEN: usize = (((CLIP + BIAS) >> ENCODE_SHIFT) + 1) as usize;

/// Sign bit of a μ-law code before the final bit inversion.
const SIGN_BIT: u8 = 0x80;

/// Bytes per PCM16 sample in the little-endian byte-level helpers.
const PCM16_BYTES: usize = 2;

/// Decoder table: `DECODE_TABLE[code]` is the linear PCM16 value of `code`.
///
/// Both tables are evaluated at compile time by `const fn`s; they are
/// `static` rather than `const` so the binary holds exactly one copy.
static DECODE_TABLE: [i16; 256] = build_decode_table();

/// Encoder table: `ENCODE_TABLE[(magnitude + BIAS) >> ENCODE_SHIFT]` is the
/// μ-law code of a *negative* sample of that magnitude (sign bit clear after
/// inversion). Positive samples set [`SIGN_BIT`] on top.
static ENCODE_TABLE: [u8; ENCODE_TABLE_LEN] = build_encode_table();

/// `ulaw2linear` from the Sun reference `g711.c`, for one code.
const fn ulaw_to_linear(code: u8) -> i16 {
    let inverted = !code;
    let mantissa = (inverted & 0x0F) as i32;
    let segment = ((inverted & 0x70) >> 4) as u32;
    let magnitude = ((mantissa << 3) + BIAS as i32) << segment;
    let linear = if inverted & SIGN_BIT != 0 {
        BIAS as i32 - magnitude
    } else {
        magnitude - BIAS as i32
    };
    // |linear| <= (((15 << 3) + 0x84) << 7) - 0x84 = 32124, within i16.
    linear as i16
}

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0usize;
    while code < 256 {
        table[code] = ulaw_to_linear(code as u8);
        code += 1;
    }
    table
}

const fn build_encode_table() -> [u8; ENCODE_TABLE_LEN] {
    let mut table = [0u8; ENCODE_TABLE_LEN];
    let mut index = 0usize;
    while index < ENCODE_TABLE_LEN {
        // Smallest biased magnitude that maps to this index; the dropped low
        // bits do not influence the code (see ENCODE_SHIFT).
        let biased = (index as u32) << ENCODE_SHIFT;
        // Segment = position of the top set bit above bit 7 (biased >= 0x80
        // for every reachable index since BIAS >= 0x80; lower indices are
        // unreachable and are filled with segment 0 values).
        let top_bit = (biased | 0x80).ilog2();
        let segment = top_bit - 7;
        let mantissa = (biased >> (segment + 3)) & 0x0F;
        let code = ((segment << 4) | mantissa) as u8;
        // Negative-sample code: invert everything except the (clear) sign bit.
        table[index] = !code & !SIGN_BIT;
        index += 1;
    }
    table
}

/// Decodes one μ-law code to a linear PCM16 sample (ITU-T G.711).
///
/// Output range is -32124..=32124. `0xFF` and `0x7F` both decode to 0,
/// `0x00` to -32124 and `0x80` to 32124, exactly as the Sun `g711.c`
/// `ulaw2linear` reference.
#[inline]
#[must_use]
pub fn decode(byte: u8) -> i16 {
    DECODE_TABLE[usize::from(byte)]
}

/// Encodes one linear PCM16 sample to a μ-law code (ITU-T G.711).
///
/// Matches the Sun `g711.c` `linear2ulaw` reference bit for bit over the
/// whole `i16` range: magnitudes above 32635 clip to the loudest code
/// (`0x80` positive, `0x00` negative) and 0 encodes as [`SILENCE`] (`0xFF`).
#[inline]
#[must_use]
pub fn encode(sample: i16) -> u8 {
    let magnitude = i32::from(sample).unsigned_abs().min(CLIP);
    // magnitude <= CLIP, so index <= (CLIP + BIAS) >> ENCODE_SHIFT, the
    // last table entry: the lookup cannot go out of bounds.
    let index = ((magnitude + BIAS) >> ENCODE_SHIFT) as usize;
    let code = ENCODE_TABLE[index];
    if sample >= 0 { code | SIGN_BIT } else { code }
}

/// Decodes μ-law bytes (one sample each) and appends the PCM16 samples to
/// `out`: `mulaw.len()` samples are added.
pub fn decode_into(mulaw: &[u8], out: &mut Vec<i16>) {
    out.reserve(mulaw.len());
    out.extend(mulaw.iter().map(|&byte| decode(byte)));
}

/// Encodes PCM16 samples and appends the μ-law bytes to `out`:
/// `pcm.len()` bytes are added.
pub fn encode_into(pcm: &[i16], out: &mut Vec<u8>) {
    out.reserve(pcm.len());
    out.extend(pcm.iter().map(|&sample| encode(sample)));
}

/// Decodes μ-law bytes and appends the samples to `out` as PCM16
/// little-endian bytes (the plugin audio wire format): `2 * mulaw.len()`
/// bytes are added.
pub fn decode_to_pcm16le(mulaw: &[u8], out: &mut Vec<u8>) {
    // Sized once and written in place: a two-byte `extend_from_slice` per sample checks the
    // capacity 160 times a frame and does not vectorise.
    let start = out.len();
    out.resize(start + mulaw.len() * PCM16_BYTES, 0);
    let (samples, _) = out[start..].as_chunks_mut::<PCM16_BYTES>();
    for (sample, &byte) in samples.iter_mut().zip(mulaw) {
        *sample = decode(byte).to_le_bytes();
    }
}

/// Encodes PCM16 little-endian bytes (two per sample) and appends the μ-law
/// bytes to `out`: `pcm_le.len() / 2` bytes are added.
///
/// A trailing odd byte (half a sample) is ignored; callers that stream PCM
/// in arbitrary byte chunks must carry it over to the next chunk themselves.
pub fn encode_from_pcm16le(pcm_le: &[u8], out: &mut Vec<u8>) {
    let (samples, _odd_byte) = pcm_le.as_chunks::<PCM16_BYTES>();
    out.reserve(samples.len());
    out.extend(samples.iter().map(|&pair| encode(i16::from_le_bytes(pair))));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent, straightforward transcription of Sun `g711.c`
    /// `ulaw2linear` (no tables).
    fn reference_ulaw2linear(u_val: u8) -> i32 {
        let u_val = !u_val;
        let mut t: i32 = ((i32::from(u_val) & 0x0F) << 3) + 0x84;
        t <<= (i32::from(u_val) & 0x70) >> 4;
        if u_val & 0x80 != 0 {
            0x84 - t
        } else {
            t - 0x84
        }
    }

    /// Independent, straightforward transcription of Sun `g711.c`
    /// `linear2ulaw` with the classic `CLIP 32635` magnitude clip and the
    /// `seg_end` linear search (no tables shared with the module).
    fn reference_linear2ulaw(pcm_val: i32) -> u8 {
        const SEG_END: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];
        let (mut pcm_val, mask) = if pcm_val < 0 {
            (-pcm_val, 0x7Fu8)
        } else {
            (pcm_val, 0xFFu8)
        };
        if pcm_val > 32635 {
            pcm_val = 32635;
        }
        pcm_val += 0x84;
        let seg = SEG_END.iter().position(|&end| pcm_val <= end);
        match seg {
            None => 0x7F ^ mask,
            Some(seg) => {
                let uval = ((seg as i32) << 4) | ((pcm_val >> (seg + 3)) & 0x0F);
                (uval as u8) ^ mask
            }
        }
    }

    #[test]
    fn decode_matches_reference_for_all_256_codes() {
        for code in 0..=255u8 {
            assert_eq!(
                i32::from(decode(code)),
                reference_ulaw2linear(code),
                "code {code:#04x}"
            );
        }
    }

    #[test]
    fn decode_spot_values_at_every_segment_boundary() {
        // Computed from the reference algorithm: first and last code of each
        // of the 8 segments, both signs.
        let expected: [(u8, i16); 34] = [
            (0x00, -32124),
            (0x0F, -16764),
            (0x10, -15996),
            (0x1F, -8316),
            (0x20, -7932),
            (0x2F, -4092),
            (0x30, -3900),
            (0x3F, -1980),
            (0x40, -1884),
            (0x4F, -924),
            (0x50, -876),
            (0x5F, -396),
            (0x60, -372),
            (0x6F, -132),
            (0x70, -120),
            (0x7E, -8),
            (0x7F, 0),
            (0x80, 32124),
            (0x8F, 16764),
            (0x90, 15996),
            (0x9F, 8316),
            (0xA0, 7932),
            (0xAF, 4092),
            (0xB0, 3900),
            (0xBF, 1980),
            (0xC0, 1884),
            (0xCF, 924),
            (0xD0, 876),
            (0xDF, 396),
            (0xE0, 372),
            (0xEF, 132),
            (0xF0, 120),
            (0xFE, 8),
            (0xFF, 0),
        ];
        for (code, linear) in expected {
            assert_eq!(decode(code), linear, "code {code:#04x}");
        }
    }

    #[test]
    fn decode_extremes_and_zeros() {
        assert_eq!(decode(0x00), -32124);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(decode(SILENCE), 0);
        let max = (0..=255u8).map(|c| decode(c).unsigned_abs()).max();
        assert_eq!(max, Some(32124));
    }

    #[test]
    fn encode_at_segment_boundaries() {
        // (magnitude, code for +magnitude, code for -magnitude). In 16-bit
        // linear units the segment boundaries are where magnitude + 0x84
        // crosses a power of two: 124, 380, 892, 1916, 3964, 8060, 16252
        // (i.e. 31, 95, 223, 479, 991, 2015, 4063 in 14-bit units), and the
        // clip at 32635 (8159 in 14-bit units).
        let expected: [(i16, u8, u8); 22] = [
            (0, 0xFF, 0xFF),
            (1, 0xFF, 0x7F),
            (3, 0xFF, 0x7F),
            (4, 0xFE, 0x7E),
            (123, 0xF0, 0x70),
            (124, 0xEF, 0x6F),
            (379, 0xE0, 0x60),
            (380, 0xDF, 0x5F),
            (891, 0xD0, 0x50),
            (892, 0xCF, 0x4F),
            (1915, 0xC0, 0x40),
            (1916, 0xBF, 0x3F),
            (3963, 0xB0, 0x30),
            (3964, 0xAF, 0x2F),
            (8059, 0xA0, 0x20),
            (8060, 0x9F, 0x1F),
            (16251, 0x90, 0x10),
            (16252, 0x8F, 0x0F),
            (32634, 0x80, 0x00),
            (32635, 0x80, 0x00),
            (32636, 0x80, 0x00),
            (32767, 0x80, 0x00),
        ];
        for (magnitude, positive, negative) in expected {
            assert_eq!(encode(magnitude), positive, "+{magnitude}");
            assert_eq!(encode(-magnitude), negative, "-{magnitude}");
        }
    }

    #[test]
    fn encode_clips_at_i16_extremes() {
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
        assert_eq!(decode(encode(i16::MAX)), 32124);
        assert_eq!(decode(encode(i16::MIN)), -32124);
    }

    #[test]
    fn encode_zero_is_silence() {
        assert_eq!(encode(0), SILENCE);
        assert_eq!(SILENCE, 0xFF);
    }

    #[test]
    fn encode_matches_reference_for_all_65536_inputs() {
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(
                encode(sample),
                reference_linear2ulaw(i32::from(sample)),
                "sample {sample}"
            );
        }
    }

    #[test]
    fn round_trip_is_identity_except_negative_zero() {
        for code in 0..=255u8 {
            let again = encode(decode(code));
            if code == 0x7F {
                assert_eq!(again, 0xFF, "negative zero re-encodes as positive zero");
            } else {
                assert_eq!(again, code, "code {code:#04x}");
            }
        }
    }

    #[test]
    fn decode_is_strictly_monotonic_within_each_sign() {
        // Negative half: 0x00 (loudest) rises to 0x7F (zero).
        for code in 0x00..0x7Fu8 {
            assert!(decode(code) < decode(code + 1), "code {code:#04x}");
        }
        // Positive half: 0x80 (loudest) falls to 0xFF (zero).
        for code in 0x80..0xFFu8 {
            assert!(decode(code) > decode(code + 1), "code {code:#04x}");
        }
    }

    #[test]
    fn slice_helpers_append_and_agree_with_scalar() {
        let codes = [0x00u8, 0x7F, 0x80, 0xFF, 0x42, 0xC3];
        let mut pcm = vec![7i16];
        decode_into(&codes, &mut pcm);
        assert_eq!(pcm, [7, -32124, 0, 32124, 0, -1756, 1692]);

        let mut bytes = vec![0xAAu8];
        encode_into(&pcm[1..], &mut bytes);
        assert_eq!(bytes, [0xAA, 0x00, 0xFF, 0x80, 0xFF, 0x42, 0xC3]);
    }

    #[test]
    fn pcm16le_helpers_use_little_endian_and_ignore_odd_byte() {
        let mut le = vec![0x01u8];
        decode_to_pcm16le(&[0x00, 0x80, 0xFF], &mut le);
        // -32124 = 0x8284, 32124 = 0x7D7C.
        assert_eq!(le, [0x01, 0x84, 0x82, 0x7C, 0x7D, 0x00, 0x00]);

        let mut mulaw = vec![0x55u8];
        // 0x8284 (-32124), 0x7D7C (32124), then a dangling odd byte.
        encode_from_pcm16le(&[0x84, 0x82, 0x7C, 0x7D, 0x12], &mut mulaw);
        assert_eq!(mulaw, [0x55, 0x00, 0x80]);

        let mut empty = Vec::new();
        encode_from_pcm16le(&[0x12], &mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn pcm16le_round_trip_matches_sample_round_trip() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut le = Vec::new();
        decode_to_pcm16le(&all, &mut le);
        assert_eq!(le.len(), 512);
        let mut back = Vec::new();
        encode_from_pcm16le(&le, &mut back);
        let mut expected = all.clone();
        expected[0x7F] = 0xFF;
        assert_eq!(back, expected);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any PCM16 of any length: one byte per sample, decoded within G.711's quantization
            /// step (about 1/32 of the magnitude; more at the clipping edge above 32,124), and
            /// encoding what was decoded gives the same bytes again (exact).
            #[test]
            fn any_pcm_round_trips_within_a_step(samples in proptest::collection::vec(any::<i16>(), 0..4000)) {
                let mut encoded = Vec::new();
                encode_into(&samples, &mut encoded);
                prop_assert_eq!(encoded.len(), samples.len());
                let mut decoded = Vec::new();
                decode_into(&encoded, &mut decoded);
                for (a, b) in samples.iter().zip(&decoded) {
                    let magnitude = a.unsigned_abs();
                    let tolerance = if magnitude > 32_000 { 1024 } else { (magnitude / 16).max(16) };
                    prop_assert!(a.abs_diff(*b) <= tolerance, "{a} decoded as {b}");
                }
                // Exact, but for μ-law's two zeros: 0x7F (−0) decodes to 0, which encodes as 0xFF.
                let mut again = Vec::new();
                encode_into(&decoded, &mut again);
                let canonical: Vec<u8> = encoded.iter().map(|&b| if b == 0x7F { 0xFF } else { b }).collect();
                prop_assert_eq!(again, canonical);
            }

            /// Little-endian PCM16 bytes of any length, odd ones included: a byte per whole
            /// sample, the odd byte left out, no panic.
            #[test]
            fn any_pcm16le_bytes_encode(bytes in proptest::collection::vec(any::<u8>(), 0..2001)) {
                let mut out = Vec::new();
                encode_from_pcm16le(&bytes, &mut out);
                prop_assert_eq!(out.len(), bytes.len() / 2);
                let mut pcm = Vec::new();
                decode_to_pcm16le(&out, &mut pcm);
                prop_assert_eq!(pcm.len(), out.len() * 2);
            }
        }
    }
}
