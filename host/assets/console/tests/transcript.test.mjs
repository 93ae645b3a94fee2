// The live transcript built from /events: partial caller lines replaced, agent fragments
// appended then replaced by the final text, tools and failures on lines of their own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Transcript } from "../transcript.js";

const ev = (type, data) => ({ type, data });
const lines = (t) => t.turns.map((x) => [x.side, x.text, x.partial]);

test("caller partials are replaced by the final line", () => {
  const t = new Transcript();
  t.apply(ev("caller.transcript", { text: "what", final: false }));
  t.apply(ev("caller.transcript", { text: "what are your", final: false }));
  assert.deepEqual(lines(t), [["caller", "what are your", true]]);
  t.apply(ev("caller.transcript", { text: "What are your hours?", final: true }));
  assert.deepEqual(lines(t), [["caller", "What are your hours?", false]]);
  t.apply(ev("caller.transcript", { text: "And", final: false }));
  assert.deepEqual(lines(t).at(-1), ["caller", "And", true]);
  assert.equal(t.turns.length, 2);
});

test("agent fragments append; the final text replaces them", () => {
  const t = new Transcript();
  t.apply(ev("caller.transcript", { text: "Hours?", final: true }));
  t.apply(ev("agent.text", { text: "We open ", final: false }));
  t.apply(ev("agent.text", { text: "at nine.", final: false }));
  assert.deepEqual(lines(t)[1], ["agent", "We open at nine.", true]);
  t.apply(ev("agent.text", { text: "We open at nine.", final: true }));
  assert.deepEqual(lines(t), [
    ["caller", "Hours?", false],
    ["agent", "We open at nine.", false],
  ]);
  assert.equal(t.latest().text, "We open at nine.");
});

test("barge-in: the caller interrupts a partial agent line, which then closes in place", () => {
  const t = new Transcript();
  t.apply(ev("agent.text", { text: "Let me tell you about ", final: false }));
  t.apply(ev("caller.transcript", { text: "stop", final: false }));
  t.apply(ev("agent.barge_in", { heard_ms: 900 }));
  t.apply(ev("agent.text", { text: "Let me tell", final: true }));
  t.apply(ev("caller.transcript", { text: "Stop.", final: true }));
  assert.deepEqual(lines(t), [
    ["agent", "Let me tell", false],
    ["caller", "Stop.", false],
  ]);
  assert.equal(t.turns[0].heardMs, 900);
});

test("after a barge-in without a final text, the next reply starts its own line", () => {
  const t = new Transcript();
  t.apply(ev("agent.text", { text: "Sorry, I did not get that.", final: false }));
  t.apply(ev("caller.transcript", { text: "ever", final: false }));
  t.apply(ev("agent.barge_in", { heard_ms: 0 }));
  t.apply(ev("caller.transcript", { text: "Ever failed.", final: true }));
  t.apply(ev("agent.text", { text: "Sorry, ", final: false }));
  t.apply(ev("agent.text", { text: "I did not get that.", final: false }));
  assert.deepEqual(lines(t), [
    ["agent", "Sorry, I did not get that.", false],
    ["caller", "Ever failed.", false],
    ["agent", "Sorry, I did not get that.", true],
  ]);
  assert.equal(t.turns[0].heardMs, 0);
  assert.equal(t.turns[2].heardMs, null);
  t.apply(ev("agent.text", { text: "Sorry, I did not get that.", final: true }));
  assert.equal(t.turns[2].partial, false);
});

test("a cut line takes its final text (what was heard) after the barge-in", () => {
  const t = new Transcript();
  t.apply(ev("agent.text", { text: "We open at nine and close at six.", final: false }));
  t.apply(ev("agent.barge_in", { heard_ms: 1200 }));
  t.apply(ev("agent.text", { text: "We open at nine", final: true }));
  assert.deepEqual(lines(t), [["agent", "We open at nine", false]]);
  t.apply(ev("agent.text", { text: "Yes?", final: true }));
  assert.deepEqual(lines(t).at(-1), ["agent", "Yes?", false]);
  assert.equal(t.turns.length, 2);
});

test("a final agent text with no fragments before it is a line of its own", () => {
  const t = new Transcript();
  assert.equal(t.apply(ev("agent.text", { text: "", final: true })), false);
  t.apply(ev("agent.text", { text: "Hello!", final: true }));
  assert.deepEqual(lines(t), [["agent", "Hello!", false]]);
});

test("an empty final caller result removes the partial line", () => {
  const t = new Transcript();
  t.apply(ev("caller.transcript", { text: "uh", final: false }));
  t.apply(ev("caller.transcript", { text: "", final: true }));
  assert.deepEqual(lines(t), []);
});

test("tool call and result; plugin failures; unknown events change nothing", () => {
  const t = new Transcript();
  t.apply(ev("tool.call", { id: "t1", name: "order_status", arguments: { order: "1042" } }));
  assert.deepEqual(lines(t), [["tool", 'order_status({"order":"1042"})', true]]);
  t.apply(ev("tool.result", { id: "t1", name: "order_status", ok: true, duration_ms: 212 }));
  assert.deepEqual(lines(t), [["tool", 'order_status({"order":"1042"}) → ok (212 ms)', false]]);
  t.apply(ev("plugin.failed", { plugin: "whisper", stage: "stt", kind: "trap", message: "boom" }));
  assert.deepEqual(lines(t).at(-1), ["system", "Plugin whisper (stt) failed: boom", false]);
  const v = t.version;
  assert.equal(t.apply(ev("caller.speech_started", { at_ms: 5 })), false);
  assert.equal(t.version, v);
});

test("old lines are dropped past the limit", () => {
  const t = new Transcript(3);
  for (let i = 0; i < 5; i++) t.apply(ev("caller.transcript", { text: `l${i}`, final: true }));
  assert.deepEqual(t.turns.map((x) => x.text), ["l2", "l3", "l4"]);
});
