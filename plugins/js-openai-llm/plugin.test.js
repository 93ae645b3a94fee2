// The LLM stage's logic in Node with the SDK's test kit (fake host functions, no gateway, no
// server): `node --test plugins/js-openai-llm`. The same wire protocol end to end, against the
// fake OpenAI HTTP server through the gateway, is tests/e2e/js_plugins.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import plugin from './plugin.js';
import { SseParser } from './sse.js';
import {
  LlmHarness, Harness, openError, message, io, replyText, toolCalls,
} from '../../plugin-api/js/testing.js';

const settings = { base_url: 'http://127.0.0.1:9/v1/', model: 'test-model' };
const history = [message.system('Be brief.'), message.user('Hello?')];

/** A `chat.completion.chunk` event with a content delta (or a finish reason). */
const chunk = (/** @type {object} */ delta, finish = null) =>
  `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;

/** Opens a conversation with the key granted and asks for a reply; returns it and the request's handle. */
function replying(opts = {}) {
  const h = LlmHarness.open(plugin, { settings, secrets: { api_key: 'sk-test' }, ...opts });
  assert.deepEqual(h.reply(history), []);
  const [request] = h.host.requests().slice(-1);
  return { h, request, id: /** @type {number} */ (request.handle) };
}

test('a reply posts the history with the bearer token and streams the deltas, then done', () => {
  const { h, request, id } = replying();
  assert.equal(request.method, 'POST');
  assert.equal(request.url, 'http://127.0.0.1:9/v1/chat/completions');
  assert.equal(request.headers.authorization, 'Bearer sk-test');
  assert.equal(request.headers['content-type'], 'application/json');
  assert.equal(request.headers.accept, 'text/event-stream');
  assert.deepEqual(request.json(), {
    model: 'test-model',
    stream: true,
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello?' }],
  });
  assert.deepEqual(h.io(io.httpHead(id, 200, { 'content-type': 'text/event-stream' })), []);
  assert.deepEqual(h.io(io.httpChunk(id, chunk({ role: 'assistant', content: '' }) + chunk({ content: 'Sure' }))), [
    { tag: 'text-delta', val: 'Sure' },
  ]);
  // An event cut mid-line across chunks, with \r\n line ends.
  const split = chunk({ content: ', for what time?' }).replace(/\n/g, '\r\n');
  assert.deepEqual(h.io(io.httpChunk(id, split.slice(0, 20))), []);
  assert.deepEqual(h.io(io.httpChunk(id, split.slice(20))), [{ tag: 'text-delta', val: ', for what time?' }]);
  const end = h.io(io.httpChunk(id, `${chunk({}, 'stop')}data: [DONE]\n\n`));
  assert.deepEqual(end, [{ tag: 'done' }]);
  assert.deepEqual(h.io(io.httpDone(id)), [], 'events after the end are ignored');
});

test('no key, no Authorization header; temperature and max_tokens go into the request', () => {
  const h = LlmHarness.open(plugin, { settings: { ...settings, temperature: 0.2, max_tokens: 50 } });
  h.reply(history);
  const [request] = h.host.requests();
  assert.equal(request.headers.authorization, undefined);
  assert.equal(request.json().temperature, 0.2);
  assert.equal(request.json().max_tokens, 50);
});

test('a multi-byte character split across chunks arrives whole', () => {
  const { h, id } = replying();
  h.io(io.httpHead(id, 200));
  const bytes = new TextEncoder().encode(chunk({ content: 'Größe ✓' }));
  const at = bytes.indexOf(0xc3) + 1;
  assert.deepEqual(h.io(io.httpChunk(id, bytes.subarray(0, at))), []);
  assert.equal(replyText(h.io(io.httpChunk(id, bytes.subarray(at)))), 'Größe ✓');
});

test('cancel cancels the request and drops its late events; a new reply starts clean', () => {
  const { h, id } = replying();
  h.io(io.httpHead(id, 200));
  assert.equal(replyText(h.io(io.httpChunk(id, chunk({ content: 'One' })))), 'One');
  assert.deepEqual(h.cancel(), []);
  assert.deepEqual(h.host.cancelled(), [id]);
  assert.deepEqual(h.io(io.httpChunk(id, chunk({ content: ' two' }))), []);
  assert.deepEqual(h.io(io.httpDone(id)), []);
  // A reply abandons the one in progress too.
  h.reply(history);
  const second = /** @type {number} */ (h.host.requests()[1].handle);
  h.reply(history);
  const third = /** @type {number} */ (h.host.requests()[2].handle);
  assert.deepEqual(h.host.cancelled(), [id, second]);
  h.io(io.httpHead(third, 200));
  assert.deepEqual(h.io(io.httpChunk(third, `${chunk({ content: 'Fresh' })}data: [DONE]\n\n`)), [
    { tag: 'text-delta', val: 'Fresh' }, { tag: 'done' },
  ]);
  h.hangup();
});

test('statuses map to unauthorized, rate-limited and upstream, quoting the API message', () => {
  const cases = [
    [401, {}, '{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}', 'unauthorized', 'HTTP 401: Incorrect API key provided'],
    [429, { 'Retry-After': '1.5' }, '{"error":{"message":"slow down"}}', 'rate-limited', 2],
    [500, {}, '<html>oops</html>', 'upstream', 'HTTP 500: <html>oops</html>'],
    [502, {}, '', 'upstream', 'HTTP 502: (no body)'],
  ];
  for (const [status, headers, body, kind, detail] of cases) {
    const { h, id } = replying();
    h.io(io.httpHead(id, /** @type {number} */ (status), /** @type {any} */ (headers)));
    h.io(io.httpChunk(id, /** @type {string} */ (body)));
    assert.throws(() => h.io(io.httpDone(id)), (e) => {
      assert.equal(e.payload.tag, kind, String(status));
      if (typeof detail === 'number') assert.equal(e.payload.val, detail);
      else assert.match(String(e.payload.val), new RegExp(String(detail).replace(/[()]/g, '\\$&')));
      return true;
    });
  }
});

test('a cut stream, an error event, a failed request and garbage are upstream errors', () => {
  const fails = (/** @type {(h: LlmHarness, id: number) => void} */ f, /** @type {RegExp} */ why) => {
    const { h, id } = replying();
    h.io(io.httpHead(id, 200));
    assert.throws(() => f(h, id), (e) => e.payload.tag === 'upstream' && why.test(e.payload.val));
  };
  fails((h, id) => { h.io(io.httpChunk(id, chunk({ content: 'Hi' }))); h.io(io.httpDone(id)); }, /before data: \[DONE\]/);
  fails((h, id) => h.io(io.httpChunk(id, 'data: {"error":{"message":"overloaded"}}\n\n')), /error mid-reply: overloaded/);
  fails((h, id) => h.io(io.failed(id, 'connection reset')), /failed: connection reset/);
  fails((h, id) => h.io(io.httpChunk(id, 'data: not json\n\n')), /not JSON/);
  fails((h, id) => h.io(io.httpChunk(id, new Uint8Array([0x64, 0x61, 0xff, 0x0a]))), /not UTF-8/);
  // A finish_reason without [DONE] is a whole reply.
  const { h, id } = replying();
  h.io(io.httpHead(id, 200));
  h.io(io.httpChunk(id, chunk({ content: 'Bye' }, 'stop')));
  assert.deepEqual(h.io(io.httpDone(id)), [{ tag: 'done' }]);
});

test('tools are offered; streamed tool calls go out whole, then done; the continuation maps', () => {
  const h = LlmHarness.open(plugin, { settings, secrets: { api_key: 'k' } });
  h.tools([{ name: 'order_status', description: 'Looks up an order', parameters: { type: 'object', properties: { id: { type: 'string' } } } }]);
  h.reply(history);
  const [request] = h.host.requests();
  const body = request.json();
  assert.deepEqual(body.tools, [{ type: 'function', function: { name: 'order_status', description: 'Looks up an order', parameters: { type: 'object', properties: { id: { type: 'string' } } } } }]);
  assert.equal(body.tool_choice, 'auto');
  assert.equal(body.parallel_tool_calls, true);
  const id = /** @type {number} */ (request.handle);
  h.io(io.httpHead(id, 200));
  const out = h.io(io.httpChunk(id, [
    chunk({ content: 'Let me check.' }),
    chunk({ tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'order_status', arguments: '{"id"' } }] }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: ':"42"}' } }] }),
    chunk({}, 'tool_calls'),
    'data: [DONE]\n\n',
  ].join('')));
  assert.deepEqual(out.map((o) => o.tag), ['text-delta', 'tool-call', 'done']);
  assert.deepEqual(toolCalls(out), [{ id: 'call_1', name: 'order_status', arguments: '{"id":"42"}' }]);
  h.reply([...history, message.assistant('', toolCalls(out)), message.tool('call_1', '{"status":"shipped"}')]);
  assert.deepEqual(h.host.requests()[1].json().messages.slice(2), [
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'order_status', arguments: '{"id":"42"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: '{"status":"shipped"}' },
  ]);
  assert.throws(() => h.tools([{ name: 'bad', parameters: '[1]' }]), (e) => e.payload.tag === 'invalid-config');
});

test('bad settings are refused as invalid-config, naming the key', () => {
  for (const [bad, key] of [
    [{ base_url: 'ftp://x' }, 'base_url'],
    [{ model: '' }, 'model'],
    [{ temperature: 3 }, 'temperature'],
    [{ temperature: 'hot' }, 'temperature'],
    [{ max_tokens: 0 }, 'max_tokens'],
    [{ voice: 'x' }, 'voice'],
  ]) {
    const e = openError(plugin, { settings: bad });
    assert.equal(e.payload.tag, 'invalid-config', JSON.stringify(bad));
    assert.match(String(e.payload.val), new RegExp(key));
  }
});

test('a host outside allowed_hosts refuses the reply as invalid-config', () => {
  const h = LlmHarness.open(plugin, { settings });
  h.host.refuse = { tag: 'denied', val: '127.0.0.1 is not in allowed_hosts' };
  assert.throws(() => h.reply(history), (e) => e.payload.tag === 'invalid-config' && /allowed_hosts/.test(e.payload.val));
});

test('the stage harness refuses a plugin of another world', () => {
  assert.throws(() => Harness.open(plugin, { settings }), /llmPlugin/);
});

test('the event-stream parser: comments, multi-line data, bare CR, a last event without its blank line', () => {
  const p = new SseParser();
  const enc = (/** @type {string} */ s) => new TextEncoder().encode(s);
  assert.deepEqual(p.feed(enc(': keep-alive\ndata: a\r')), []);
  assert.deepEqual(p.feed(enc('\ndata:b\r\rev')), [{ event: 'message', data: 'a\nb' }]);
  assert.deepEqual(p.feed(enc('ent: error\ndata: x\n\n')), [{ event: 'error', data: 'x' }]);
  assert.deepEqual(p.feed(enc('data: [DONE]')), []);
  assert.deepEqual(p.finish(), [{ event: 'message', data: '[DONE]' }]);
});
