//! Audio helpers for plugins: ITU-T G.711 μ-law and PCM16 byte conversions.
//!
//! The host converts caller audio to the format a plugin asks for, so most plugins never need
//! these; they are here for plugins that take Twilio's μ-law untouched and still want samples
//! (to measure loudness, say), and for the test kit. Straightforward per-sample code, not the
//! host's table-driven codec.

/// μ-law bias added before the segment search (ITU-T G.711, Table 2a).
const BIAS: i32 = 0x84;
/// Largest magnitude encoded without clipping.
const CLIP: i32 = 32_635;

/// Encodes one PCM16 sample as G.711 μ-law (ITU-T G.711).
pub fn mulaw_encode(sample: i16) -> u8 {
    let mut value = i32::from(sample);
    let sign = if value < 0 { 0x80 } else { 0 };
    if value < 0 {
        value = -value;
    }
    value = value.min(CLIP) + BIAS;
    // Segment: position of the highest set bit above bit 7.
    let segment = (value >> 7).max(1).ilog2() as i32;
    let mantissa = (value >> (segment + 3)) & 0x0F;
    !((sign | (segment << 4) | mantissa) as u8)
}

/// Decodes one G.711 μ-law byte to PCM16 (ITU-T G.711).
pub fn mulaw_decode(byte: u8) -> i16 {
    let byte = !byte;
    let segment = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << segment) - BIAS;
    (if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }) as i16
}

/// PCM16 samples as little-endian bytes (the contract's `pcm16` encoding).
pub fn pcm16_to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Little-endian bytes as PCM16 samples; a trailing odd byte is ignored.
pub fn pcm16_from_bytes(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_round_trips_every_code_but_negative_zero() {
        for byte in 0..=255u8 {
            let back = mulaw_encode(mulaw_decode(byte));
            // 0x7F is "negative zero"; it decodes to 0, which encodes as 0xFF.
            let expected = if byte == 0x7F { 0xFF } else { byte };
            assert_eq!(back, expected, "code {byte:#04x}");
        }
    }

    #[test]
    fn mulaw_matches_g711_reference_points() {
        assert_eq!(mulaw_encode(0), 0xFF);
        assert_eq!(mulaw_encode(i16::MAX), 0x80);
        assert_eq!(mulaw_encode(i16::MIN), 0x00);
        assert_eq!(mulaw_decode(0x80), 32_124);
        assert_eq!(mulaw_decode(0x00), -32_124);
        assert_eq!(mulaw_decode(0xFF), 0);
    }

    #[test]
    fn pcm16_bytes_round_trip() {
        let samples = [0, 1, -1, i16::MAX, i16::MIN];
        assert_eq!(pcm16_from_bytes(&pcm16_to_bytes(&samples)), samples);
    }
}
