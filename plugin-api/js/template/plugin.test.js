// Tests of the template plugin in Node, no gateway: `node --test template/` (plugin-api/js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import plugin from './plugin.js';
import { Harness, openError, playedBytes, marks } from '../testing.js';
import { pcm16ToBytes } from '../index.js';

/** A 20 ms frame of a square wave at ±amp. @param {number} amp */
const loud = (amp = 4000) => Int16Array.from({ length: 160 }, (_, i) => (i % 16 < 8 ? amp : -amp));

test('immediate mode plays every frame back as it arrives', () => {
  const h = Harness.open(plugin, { settings: { mode: 'immediate' } });
  const out = h.audio(loud());
  assert.deepEqual(out.map((o) => o.tag), ['play']);
  assert.deepEqual(playedBytes(out), pcm16ToBytes(loud()));
});

test('an utterance is played back once the caller pauses, without its trailing silence', () => {
  const h = Harness.open(plugin, { settings: { silence_ms: 100 } });
  assert.deepEqual(h.silence(200), []);
  let speech = new Int16Array(0);
  for (let i = 0; i < 10; i++) speech = Int16Array.from([...speech, ...loud()]);
  assert.deepEqual(h.speak(speech), []);
  const out = h.silence(100);
  assert.deepEqual(marks(out), ['utterance-1']);
  // The 200 ms pre-roll of silence, then the speech.
  const played = playedBytes(out);
  assert.equal(played.length, (1600 + speech.length) * 2);
  assert.deepEqual(played.subarray(3200), pcm16ToBytes(speech));
});

test('# hangs up, other keys clear playback', () => {
  const h = Harness.open(plugin, {});
  assert.deepEqual(h.dtmf('#'), [{ tag: 'hang-up' }]);
  assert.deepEqual(h.dtmf('5'), [{ tag: 'clear-playback' }]);
});

test('the greeting tone plays first, with its mark', () => {
  const h = Harness.open(plugin, { settings: { greeting_tone: true } });
  const out = h.dtmf('1');
  assert.deepEqual(out.map((o) => o.tag), ['play', 'mark', 'clear-playback']);
  assert.equal(playedBytes(out).length, 400 * 8 * 2);
});

test('bad settings are refused as invalid-config, naming the key', () => {
  for (const [settings, key] of [
    [{ mode: 'loud' }, 'mode'],
    [{ silence_ms: 'long' }, 'silence_ms'],
    [{ volume: 3 }, 'volume'],
    ['not json', 'JSON'],
  ]) {
    const e = openError(plugin, { settings });
    assert.equal(e.payload.tag, 'invalid-config', String(settings));
    assert.match(String(e.payload.val), new RegExp(key));
  }
});

test('the session logs that it opened', () => {
  const h = Harness.open(plugin, { settings: { mode: 'immediate' } });
  assert.deepEqual(h.host.logs, [{ level: 'info', message: 'js-echo session open, mode immediate' }]);
});
