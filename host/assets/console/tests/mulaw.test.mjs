// μ-law codec against an independent transcription of Sun's g711.c and the gateway's own
// vectors (host/src/audio/mulaw.rs tests).
import { test } from "node:test";
import assert from "node:assert/strict";
import { DECODE_TABLE, SILENCE, decode, decodeFloat, encode, encodeFloat } from "../mulaw.js";

/** g711.c ulaw2linear, transcribed without tables. */
function referenceDecode(uVal) {
  uVal = ~uVal & 0xff;
  let t = ((uVal & 0x0f) << 3) + 0x84;
  t <<= (uVal & 0x70) >> 4;
  return uVal & 0x80 ? 0x84 - t : t - 0x84;
}

/** g711.c linear2ulaw with CLIP 32635 and the seg_end linear search. */
function referenceEncode(pcm) {
  const SEG_END = [0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff, 0x3fff, 0x7fff];
  let mask;
  if (pcm < 0) {
    pcm = -pcm;
    mask = 0x7f;
  } else {
    mask = 0xff;
  }
  if (pcm > 32635) pcm = 32635;
  pcm += 0x84;
  const seg = SEG_END.findIndex((end) => pcm <= end);
  if (seg < 0) return 0x7f ^ mask;
  return (((seg << 4) | ((pcm >> (seg + 3)) & 0x0f)) ^ mask) & 0xff;
}

test("decode matches g711.c for all 256 codes", () => {
  for (let code = 0; code < 256; code++) {
    assert.equal(decode(code), referenceDecode(code), `code ${code}`);
    assert.equal(DECODE_TABLE[code], referenceDecode(code));
  }
});

test("decode at every segment boundary (the gateway's vectors)", () => {
  const expected = [
    [0x00, -32124], [0x0f, -16764], [0x10, -15996], [0x1f, -8316], [0x20, -7932],
    [0x2f, -4092], [0x30, -3900], [0x3f, -1980], [0x40, -1884], [0x4f, -924],
    [0x50, -876], [0x5f, -396], [0x60, -372], [0x6f, -132], [0x70, -120], [0x7e, -8],
    [0x7f, 0], [0x80, 32124], [0x8f, 16764], [0x90, 15996], [0x9f, 8316], [0xa0, 7932],
    [0xaf, 4092], [0xb0, 3900], [0xbf, 1980], [0xc0, 1884], [0xcf, 924], [0xd0, 876],
    [0xdf, 396], [0xe0, 372], [0xef, 132], [0xf0, 120], [0xfe, 8], [0xff, 0],
  ];
  for (const [code, linear] of expected) assert.equal(decode(code), linear, `code ${code}`);
});

test("encode matches g711.c for all 65536 PCM16 inputs", () => {
  for (let s = -32768; s <= 32767; s++) {
    assert.equal(encode(s), referenceEncode(s), `sample ${s}`);
  }
});

test("encode at segment boundaries and extremes (the gateway's vectors)", () => {
  const expected = [
    [0, 0xff, 0xff], [1, 0xff, 0x7f], [3, 0xff, 0x7f], [4, 0xfe, 0x7e], [123, 0xf0, 0x70],
    [124, 0xef, 0x6f], [379, 0xe0, 0x60], [380, 0xdf, 0x5f], [891, 0xd0, 0x50],
    [892, 0xcf, 0x4f], [1915, 0xc0, 0x40], [1916, 0xbf, 0x3f], [3963, 0xb0, 0x30],
    [3964, 0xaf, 0x2f], [8059, 0xa0, 0x20], [8060, 0x9f, 0x1f], [16251, 0x90, 0x10],
    [16252, 0x8f, 0x0f], [32634, 0x80, 0x00], [32635, 0x80, 0x00], [32636, 0x80, 0x00],
    [32767, 0x80, 0x00],
  ];
  for (const [magnitude, positive, negative] of expected) {
    assert.equal(encode(magnitude), positive, `+${magnitude}`);
    assert.equal(encode(-magnitude), negative, `-${magnitude}`);
  }
  assert.equal(encode(0), SILENCE);
  assert.equal(SILENCE, 0xff);
  assert.equal(encode(-32768), 0x00);
  assert.equal(decode(encode(32767)), 32124);
  assert.equal(decode(encode(-32768)), -32124);
});

test("round trip is the identity except negative zero", () => {
  for (let code = 0; code < 256; code++) {
    assert.equal(encode(decode(code)), code === 0x7f ? 0xff : code, `code ${code}`);
  }
});

test("float helpers scale by 32768, round and clip", () => {
  assert.equal(encodeFloat(0), 0xff);
  assert.equal(encodeFloat(1), 0x80);
  assert.equal(encodeFloat(-1), 0x00);
  assert.equal(encodeFloat(5), 0x80);
  assert.equal(encodeFloat(-5), 0x00);
  assert.equal(encodeFloat(NaN), 0xff);
  assert.equal(encodeFloat(1000 / 32768), encode(1000));
  assert.equal(encodeFloat(-1000 / 32768), encode(-1000));
  for (let code = 0; code < 256; code++) {
    assert.equal(encodeFloat(decodeFloat(code)), code === 0x7f ? 0xff : code);
  }
});
