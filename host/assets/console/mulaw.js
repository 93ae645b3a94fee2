// ITU-T G.711 μ-law codec for the browser phone (8 kHz, one byte per sample).
//
// The same rules as the gateway's `host/src/audio/mulaw.rs` and the Sun Microsystems reference
// `g711.c` (`linear2ulaw` / `ulaw2linear`): 16-bit linear input, bias 0x84, magnitudes clipped
// at 32635, every bit inverted on the wire. Decoding is a 256-entry table; encoding finds the
// segment from the top set bit of the biased magnitude (no loop, no table).
//
// Plain ES module without DOM or Web Audio: imported by the AudioWorklet (phone-worklet.js),
// the page and Node's test runner alike.

/** μ-law code of linear 0 ("positive zero"): the byte for silence. */
export const SILENCE = 0xff;

/** Added to the magnitude so segment boundaries fall on powers of two (G.711, g711.c BIAS). */
const BIAS = 0x84;

/** Largest magnitude encoded; CLIP + BIAS = 0x7FFF is the top of segment 7 (g711.c CLIP). */
const CLIP = 32635;

/** `ulaw2linear` for one code: the linear PCM16 value, -32124..=32124. */
function ulawToLinear(code) {
  const u = ~code & 0xff;
  const magnitude = (((u & 0x0f) << 3) + BIAS) << ((u & 0x70) >> 4);
  return u & 0x80 ? BIAS - magnitude : magnitude - BIAS;
}

/** DECODE_TABLE[code] is the linear PCM16 sample of μ-law `code`. */
export const DECODE_TABLE = (() => {
  const table = new Int16Array(256);
  for (let code = 0; code < 256; code++) table[code] = ulawToLinear(code);
  return table;
})();

/**
 * Encodes one linear PCM16 sample (an integer; values outside -32768..32767 are clipped like
 * any magnitude above 32635) to its μ-law code. encode(0) = 0xFF, encode(32767) = 0x80,
 * encode(-32768) = 0x00.
 */
export function encode(sample) {
  let magnitude;
  let mask;
  if (sample < 0) {
    magnitude = -sample;
    mask = 0x7f;
  } else {
    magnitude = sample;
    mask = 0xff;
  }
  if (magnitude > CLIP) magnitude = CLIP;
  magnitude += BIAS; // 0x84..=0x7FFF: the top set bit is bit 7 + segment.
  const segment = 31 - Math.clz32(magnitude) - 7;
  const code = (segment << 4) | ((magnitude >> (segment + 3)) & 0x0f);
  return code ^ mask;
}

/** Decodes one μ-law code (0..255) to a linear PCM16 sample. */
export function decode(code) {
  return DECODE_TABLE[code & 0xff];
}

/**
 * Encodes a Web Audio float sample (nominally -1..1) as μ-law: scaled to PCM16, rounded and
 * clipped first.
 */
export function encodeFloat(x) {
  let s = Math.round(x * 32768);
  if (s > 32767) s = 32767;
  else if (s < -32768) s = -32768;
  else if (Number.isNaN(s)) s = 0;
  return encode(s);
}

/** Decodes μ-law `code` to a Web Audio float sample (-1..1). */
export function decodeFloat(code) {
  return DECODE_TABLE[code & 0xff] / 32768;
}
