// The microphone path: 160-byte μ-law frames, straight at 8 kHz, filtered and decimated from
// 48 kHz.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Downsampler, FRAME_SAMPLES, Framer } from "../capture.js";
import { decode, encodeFloat } from "../mulaw.js";

test("8 kHz input: every sample encoded, in 160-byte frames, remainder kept", () => {
  const frames = [];
  const framer = new Framer(8000, (f) => frames.push(f));
  const input = Float32Array.from({ length: 128 * 5 }, (_, i) => Math.sin(i / 7) * 0.5);
  for (let at = 0; at < input.length; at += 128) framer.push(input.subarray(at, at + 128));
  assert.equal(frames.length, 4); // 640 samples
  assert.ok(frames.every((f) => f.length === FRAME_SAMPLES));
  const all = frames.flatMap((f) => [...f]);
  assert.deepEqual(all, [...input].map(encodeFloat));
  // Each frame is its own array (safe to transfer).
  assert.notEqual(frames[0].buffer, frames[1].buffer);
});

function rms(xs) {
  return Math.sqrt(xs.reduce((s, x) => s + x * x, 0) / xs.length);
}

test("48 kHz input: 1 kHz passes, 6 kHz is filtered out, 6:1 decimation", () => {
  const tone = (hz) => Float32Array.from({ length: 48000 }, (_, i) => 0.5 * Math.sin((2 * Math.PI * hz * i) / 48000));
  const out1k = [];
  new Downsampler(48000).push(tone(1000), (x) => out1k.push(x));
  assert.equal(out1k.length, 8000);
  const pass = rms(out1k.slice(100));
  assert.ok(Math.abs(pass - 0.5 / Math.SQRT2) < 0.01, `1 kHz rms ${pass}`);
  const out6k = [];
  new Downsampler(48000).push(tone(6000), (x) => out6k.push(x));
  const stop = rms(out6k.slice(100));
  assert.ok(stop < 0.01, `6 kHz leaks: rms ${stop}`);
});

test("44.1 kHz input through the framer: the right number of frames, the tone kept", () => {
  const frames = [];
  const framer = new Framer(44100, (f) => frames.push(f));
  const input = Float32Array.from({ length: 44100 }, (_, i) => 0.25 * Math.sin((2 * Math.PI * 440 * i) / 44100));
  for (let at = 0; at < input.length; at += 128) framer.push(input.subarray(at, at + 128));
  assert.equal(frames.length, 50); // one second = 8000 samples = 50 frames
  const samples = frames.flatMap((f) => [...f].map((b) => decode(b) / 32768));
  const level = rms(samples.slice(200));
  assert.ok(Math.abs(level - 0.25 / Math.SQRT2) < 0.01, `rms ${level}`);
});
