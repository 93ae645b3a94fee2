// The bridge's logic in Node with the SDK's test kit (fake host functions): `node --test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import plugin from './plugin.js';
import { Harness, openError, playedBytes } from '../../plugin-api/js/testing.js';
import { toBase64 } from '../../plugin-api/js/index.js';

const settings = { base_url: 'ws://127.0.0.1:9/v1/realtime', max_call_ms: 3000 };

test('connects with the secret key, sets up μ-law, greets, and sets its timers', () => {
  const h = Harness.open(plugin, { settings, secrets: { api_key: 'sk-test' }, greeting: 'Hello' });
  const calls = h.host.takeCalls();
  assert.deepEqual(calls.map((c) => c.fn), ['secret', 'wsConnect', 'wsSend', 'wsSend', 'setTimer', 'setTimer']);
  assert.equal(calls[1].args[0], 'ws://127.0.0.1:9/v1/realtime?model=gpt-realtime');
  assert.deepEqual(calls[1].args[1], [{ name: 'Authorization', value: 'Bearer sk-test' }]);
  const update = JSON.parse(/** @type {any} */ (calls[2].args[1]).val);
  assert.equal(update.type, 'session.update');
  assert.equal(update.session.audio.output.format.type, 'audio/pcmu');
  assert.equal(JSON.parse(/** @type {any} */ (calls[3].args[1]).val).type, 'response.create');
  assert.deepEqual(calls.slice(4).map((c) => c.args[0]), [5000, 3000]);
});

test('forwards caller audio and plays the server audio', () => {
  const h = Harness.open(plugin, { settings, secrets: { api_key: 'k' } });
  h.host.takeCalls();
  assert.deepEqual(h.audio(new Uint8Array(160).fill(7)), []);
  const [append] = h.host.takeCalls();
  assert.deepEqual(JSON.parse(append.args[1].val), { type: 'input_audio_buffer.append', audio: toBase64(new Uint8Array(160).fill(7)) });
  const delta = { type: 'response.output_audio.delta', delta: toBase64(new Uint8Array(800).fill(0x55)) };
  const out = h.io({ tag: 'ws-message', val: { socket: 1, message: { tag: 'text', val: JSON.stringify(delta) } } });
  assert.deepEqual(playedBytes(out), new Uint8Array(800).fill(0x55));
  assert.equal(out[0].val.format.encoding, 'mulaw');
  const barge = h.io({ tag: 'ws-message', val: { socket: 1, message: { tag: 'text', val: '{"type":"input_audio_buffer.speech_started"}' } } });
  assert.deepEqual(barge, [{ tag: 'clear-playback' }]);
});

test('timers: the connect timeout fails the call unless the socket opened; the call limit hangs up', () => {
  const late = Harness.open(plugin, { settings, secrets: { api_key: 'k' } });
  assert.throws(() => late.io({ tag: 'timer', val: 2 }), (e) => e.payload.tag === 'upstream');
  const h = Harness.open(plugin, { settings, secrets: { api_key: 'k' } });
  assert.deepEqual(h.io({ tag: 'ws-opened', val: 1 }), []);
  assert.deepEqual(h.host.takeCalls().at(-1), { fn: 'cancel', args: [2] });
  const out = h.io({ tag: 'timer', val: 3 });
  assert.deepEqual(out.map((o) => o.tag), ['agent-transcript', 'hang-up']);
});

test('no key is unauthorized; a bad base_url is invalid-config; a closed socket is upstream', () => {
  assert.equal(openError(plugin, { settings }).payload.tag, 'unauthorized');
  assert.equal(openError(plugin, { settings: { base_url: 'http://x' } }).payload.tag, 'invalid-config');
  const h = Harness.open(plugin, { settings, secrets: { api_key: 'k' } });
  assert.throws(() => h.io({ tag: 'ws-closed', val: { socket: 1, code: 1011, reason: 'bye' } }), (e) => e.payload.tag === 'upstream');
});
