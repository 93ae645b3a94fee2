// Tests of the example pipeline stages in Node, with the SDK's stage harnesses:
// `node --test examples/` (plugin-api/js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import stt from './stt.js';
import llm from './llm.js';
import tts from './tts.js';
import {
  SttHarness, LlmHarness, TtsHarness, openError, message, transcripts, replyText, audioBytes,
} from '../testing.js';
import { WORLDS } from '../index.js';

/** 20 ms of a square wave at ±amp. */
const loud = (amp = 4000) => Int16Array.from({ length: 160 }, (_, i) => (i % 16 < 8 ? amp : -amp));

test('each declaration names its world, export and resource', () => {
  assert.deepEqual([stt.kind, stt.world, stt.exportName], ['stt', 'stt-plugin', 'stt']);
  assert.deepEqual([llm.kind, llm.world, llm.exportName], ['llm', 'llm-plugin', 'llm']);
  assert.deepEqual([tts.kind, tts.world, tts.exportName], ['tts', 'tts-plugin', 'tts']);
  for (const plugin of [stt, llm, tts]) {
    const exported = plugin.exports();
    assert.equal(exported.describe(), plugin.info);
    assert.equal(typeof exported[WORLDS[plugin.kind].resource].open, 'function');
  }
});

test('the component export turns a thrown PluginError into the WIT plugin-error', () => {
  const { Recognizer } = stt.exports();
  assert.throws(() => Recognizer.open({ settings: '{}' }), (e) => e.payload.tag === 'invalid-config');
  const { Synthesizer } = tts.exports();
  const s = Synthesizer.open({ settings: '{"ms_per_char": 10}' });
  s.handle({ tag: 'text', val: 'Hi' });
  assert.deepEqual(s.handle({ tag: 'flush' }).map((o) => o.tag), ['audio', 'utterance-done']);
});

test('stt: a turn with speech is reported as the fixed text at end-of-turn; a silent one as empty', () => {
  const h = SttHarness.open(stt, { settings: { text: 'What are your hours?' } });
  assert.deepEqual(h.silence(100), []);
  assert.deepEqual(h.speak(Int16Array.from([...loud(), ...loud()])), [{ tag: 'speech-started' }]);
  const out = h.endOfTurn();
  assert.deepEqual(transcripts(out), [{ text: 'What are your hours?', isFinal: true }]);
  assert.equal(out.at(-1)?.tag, 'end-of-turn');
  assert.deepEqual(transcripts(h.endOfTurn()), [{ text: '', isFinal: true }]);
  assert.equal(openError(stt, { settings: {} }).payload.tag, 'invalid-config');
});

test('llm: the reply streams as deltas, then done', () => {
  const h = LlmHarness.open(llm, {});
  const out = h.reply([message.system('Be kind.'), message.user('hello there')]);
  assert.equal(replyText(out), 'You said: hello there');
  assert.ok(out.filter((o) => o.tag === 'text-delta').length > 1);
  assert.deepEqual(out.at(-1), { tag: 'done' });
  assert.deepEqual(h.cancel(), []);
});

test('tts: text is spoken at flush, ms_per_char per character; cancel drops it', () => {
  const h = TtsHarness.open(tts, { settings: { ms_per_char: 10 } });
  assert.deepEqual(h.text('Hello, '), []);
  assert.deepEqual(h.text('world.'), []);
  const out = h.flush();
  assert.equal(audioBytes(out).length, 13 * 10 * 8 * 2);
  assert.deepEqual(out.at(-1), { tag: 'utterance-done' });
  h.text('dropped');
  h.cancel();
  assert.deepEqual(h.flush(), [{ tag: 'utterance-done' }]);
});
