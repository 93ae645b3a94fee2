// The phone's playback buffer: audio in order, marks reported when the audio before them has
// played, clear drops unplayed audio and reports the pending marks, silence not reported.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PlaybackQueue } from "../playback.js";
import { decodeFloat, encode } from "../mulaw.js";

function recorder(rate = 8000) {
  const log = [];
  const played = [];
  const q = new PlaybackQueue(rate, {
    played: (bytes) => {
      played.push(...bytes);
      log.push(["played", bytes.length]);
    },
    mark: (name, cleared) => log.push(["mark", name, cleared]),
  });
  return { q, log, played };
}

const bytes = (n, start = 0) => Uint8Array.from({ length: n }, (_, i) => (start + i) % 256);

test("8 kHz: the bytes play one for one, then silence (not reported)", () => {
  const { q, played } = recorder();
  q.enqueue(bytes(100));
  const out = new Float32Array(128);
  q.render(out);
  assert.deepEqual(played, [...bytes(100)]);
  for (let i = 0; i < 100; i++) assert.equal(out[i], decodeFloat(i));
  for (let i = 100; i < 128; i++) assert.equal(out[i], 0);
  q.render(out);
  assert.equal(played.length, 100);
  assert.equal(q.pending, 0);
});

test("a mark is reported when the audio queued before it has played, not before", () => {
  const { q, log, played } = recorder();
  q.enqueue(bytes(200));
  q.mark("m1");
  q.enqueue(bytes(100, 200));
  q.mark("m2");
  const out = new Float32Array(128);
  q.render(out);
  assert.deepEqual(log.filter((l) => l[0] === "mark"), []);
  q.render(out); // 256 played: m1 reached after 200
  const marks = log.filter((l) => l[0] === "mark");
  assert.deepEqual(marks, [["mark", "m1", false]]);
  // Everything up to the mark was reported before it.
  const beforeM1 = log.slice(0, log.findIndex((l) => l[1] === "m1"));
  assert.equal(beforeM1.reduce((n, l) => n + l[1], 0), 200);
  q.render(out);
  assert.deepEqual(log.filter((l) => l[0] === "mark").map((l) => l[1]), ["m1", "m2"]);
  assert.deepEqual(played, [...bytes(300)]);
});

test("a mark with nothing queued before it is reported on the next render", () => {
  const { q, log } = recorder();
  q.mark("now");
  q.render(new Float32Array(128));
  assert.deepEqual(log, [["mark", "now", false]]);
});

test("clear drops unplayed audio and reports every pending mark at once", () => {
  const { q, log, played } = recorder();
  q.enqueue(bytes(300));
  q.mark("a");
  q.enqueue(bytes(300));
  q.mark("b");
  q.render(new Float32Array(128));
  assert.equal(q.clear(), 2);
  assert.deepEqual(log.filter((l) => l[0] === "mark"), [
    ["mark", "a", true],
    ["mark", "b", true],
  ]);
  assert.equal(q.pending, 0);
  assert.equal(q.pendingMarks, 0);
  assert.equal(played.length, 128);
  const out = new Float32Array(128);
  q.render(out);
  assert.ok(out.every((x) => x === 0));
  assert.equal(played.length, 128);
  // New audio after a clear plays normally.
  q.enqueue(bytes(10, 7));
  q.render(out);
  assert.deepEqual(played.slice(128), [...bytes(10, 7)]);
});

test("played bytes are reported in batches while a long queue plays", () => {
  const { q, log, played } = recorder();
  q.enqueue(bytes(8000));
  let renders = 0;
  while (q.pending > 0) {
    q.render(new Float32Array(128));
    renders++;
  }
  assert.equal(renders, Math.ceil(8000 / 128));
  assert.equal(played.length, 8000);
  assert.ok(log.every((l) => l[1] <= 800));
});

test("48 kHz output: interpolated, 6 output samples per byte, all bytes reported", () => {
  const { q, played } = recorder(48000);
  const tone = Uint8Array.from({ length: 160 }, (_, i) =>
    encode(Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / 8000))),
  );
  q.enqueue(tone);
  const out = new Float32Array(48 * 20 + 128);
  for (let at = 0; at < out.length; at += 128) q.render(out.subarray(at, at + 128));
  assert.deepEqual(played, [...tone]);
  // The output follows the input (one input sample late), within interpolation error.
  for (let k = 2; k < 150; k++) {
    const expected = decodeFloat(tone[k - 1]);
    assert.ok(Math.abs(out[k * 6] - expected) < 1e-6, `k ${k}: ${out[k * 6]} vs ${expected}`);
  }
});
