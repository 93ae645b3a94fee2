// js-openai-llm: the language-model stage of a pipeline agent in JavaScript — OpenAI chat
// completions (`POST {base_url}/chat/completions` with `stream: true`) on OpenAI or any server
// that speaks it (llama.cpp's `llama-server`, Ollama, vLLM…: set `base_url` to its `/v1`),
// reached through the host's HTTP I/O. The JavaScript counterpart of plugins/openai-llm, and the
// SDK's example of a pipeline stage (`llmPlugin`).
//
// - Each `reply(history)` sends the whole history (the host owns it) and streams the answer back
//   as `text-delta`s, one per content delta as its server-sent event arrives, then `done`. A new
//   `reply` abandons the one in progress; `cancel` (barge-in) and `hangup` cancel its request,
//   and any of its events still in flight are dropped.
// - Tools: the agent's tools (the `tools` input) are offered with every later request (`tools`,
//   `tool_choice: "auto"`, `parallel_tool_calls: true`); the model's streamed `tool_calls`
//   fragments are assembled by `index` and go out whole as `tool-call`s at the `finish_reason`
//   (or `data: [DONE]`), then `done`. The continuation's history maps to the API's messages.
// - Failures are the `handle`'s `PluginError`: 401/403 `unauthorized`, 429 `rate-limited` (with
//   `Retry-After` seconds), any other non-2xx status, a failed or cut connection, an `error`
//   object in the stream, or a stream that ends before `data: [DONE]` (or a `finish_reason`):
//   `upstream`, quoting the API's `error.message`.
//
// Settings (the agent's `pipeline.llm.settings`, all optional): `base_url`
// ("https://api.openai.com/v1"), `model` ("gpt-4o-mini"), `temperature` (0–2; the server's
// default when absent), `max_tokens` (the server's default when absent).
// Secrets: `api_key` (`pipeline.llm.secrets`), sent as `Authorization: Bearer …`; without one no
// header is sent (local servers). The agent's `allowed_hosts` must include the `base_url` host.
import {
  llmPlugin, llmOutput, parseSettings, PluginError, IoError, http, secret, log, pcm16,
} from '../../plugin-api/js/index.js';
import { SseParser } from './sse.js';

const NAME = 'js-openai-llm';
/** What errors name this upstream call. */
const WHAT = 'OpenAI chat completion';
/** Most bytes of an error response kept for its message (OpenAI's error objects are a few
 * hundred bytes; a proxy's HTML error page is cut here). */
const MAX_ERROR_BODY_BYTES = 64 << 10;
/** Most characters of a non-JSON error body quoted in an error message. */
const MAX_QUOTED_CHARS = 200;
/** Most tool calls one reply may ask for (OpenAI accepts at most 128 tools per request). */
const MAX_CALLS = 128;
/** Most characters of one call's arguments: a megabyte is a runaway stream, not arguments. */
const MAX_ARGUMENTS_CHARS = 1 << 20;

const DEFAULTS = {
  base_url: 'https://api.openai.com/v1',
  model: 'gpt-4o-mini',
  /** @type {number | null} */
  temperature: null,
  /** @type {number | null} */
  max_tokens: null,
};

/**
 * @typedef {import('../../plugin-api/js/index.js').Message} Message
 * @typedef {import('../../plugin-api/js/index.js').Tool} Tool
 * @typedef {import('../../plugin-api/js/index.js').IoEvent} IoEvent
 * @typedef {import('../../plugin-api/js/index.js').LlmOutput} LlmOutput
 * @typedef {{ id: string, name: string, arguments: string }} PartialCall
 * @typedef {{ request: number, status: number | null, retryAfter: number | undefined,
 *   errorBody: Uint8Array[], errorBytes: number, events: SseParser, finished: boolean,
 *   calls: Map<number, PartialCall> }} Reply
 */

/** @param {typeof DEFAULTS} s */
function validate(s) {
  if (!/^https?:\/\//.test(s.base_url)) {
    throw PluginError.invalidConfig(`${NAME} settings: \`base_url\` ${JSON.stringify(s.base_url)}: expected an http:// or https:// URL`);
  }
  if (s.model === '') throw PluginError.invalidConfig(`${NAME} settings: \`model\` is empty`);
  if (s.temperature !== null && !(typeof s.temperature === 'number' && s.temperature >= 0 && s.temperature <= 2)) {
    throw PluginError.invalidConfig(`${NAME} settings: \`temperature\` ${JSON.stringify(s.temperature)} is not a number in 0–2`);
  }
  if (s.max_tokens !== null && !(Number.isInteger(s.max_tokens) && s.max_tokens > 0 && s.max_tokens <= 0xffffffff)) {
    throw PluginError.invalidConfig(`${NAME} settings: \`max_tokens\` must be a whole number ≥ 1`);
  }
}

/**
 * History message `n` as the API takes it.
 * @param {Message} m @param {number} n
 */
function apiMessage(m, n) {
  switch (m.role) {
    case 'assistant':
      if (m.toolCalls.length === 0) return { role: 'assistant', content: m.content };
      return {
        role: 'assistant',
        content: m.content === '' ? null : m.content,
        tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })),
      };
    case 'tool':
      if (m.toolCallId === undefined) {
        throw PluginError.unsupported(`history message ${n}: a tool result without the id of its call`);
      }
      return { role: 'tool', tool_call_id: m.toolCallId, content: m.content };
    default:
      return { role: m.role, content: m.content };
  }
}

/** A tool as a request offers it. @param {Tool} tool */
function offered(tool) {
  let parameters;
  try {
    parameters = JSON.parse(tool.parameters);
  } catch {
    parameters = null;
  }
  if (parameters === null || typeof parameters !== 'object' || Array.isArray(parameters)) {
    throw PluginError.invalidConfig(`tool ${tool.name}: parameters are not a JSON Schema object: ${JSON.stringify(tool.parameters)}`);
  }
  /** @type {Record<string, unknown>} */
  const fn = { name: tool.name, parameters };
  if (tool.description !== '') fn.description = tool.description;
  return { type: 'function', function: fn };
}

/** `error.message` of an OpenAI error object, or of a bare `{"message"}`. @param {string} text */
function errorMessage(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  const error = value?.error ?? value;
  if (typeof error === 'string') return error;
  return typeof error?.message === 'string' ? error.message : undefined;
}

/** The request an I/O event belongs to; undefined for WebSocket and timer events. @param {IoEvent} event */
function requestOf(event) {
  switch (event.tag) {
    case 'http-head': return event.val.request;
    case 'http-chunk': return event.val.request;
    case 'http-done': return event.val;
    case 'failed': return event.val.target;
    default: return undefined;
  }
}

/** The `PluginError` for a non-2xx response. @param {Reply} reply */
function statusError(reply) {
  const bytes = new Uint8Array(reply.errorBytes);
  let at = 0;
  for (const part of reply.errorBody) {
    bytes.set(part, at);
    at += part.length;
  }
  const text = new TextDecoder().decode(bytes).trim();
  const quoted = errorMessage(text) ?? (text === '' ? '(no body)' : [...text].slice(0, MAX_QUOTED_CHARS).join(''));
  const message = `${WHAT}: HTTP ${reply.status}: ${quoted}`;
  if (reply.status === 401 || reply.status === 403) return PluginError.unauthorized(message);
  if (reply.status === 429) {
    log.warn(message);
    return PluginError.rateLimited(reply.retryAfter);
  }
  return PluginError.upstream(message);
}

/** Seconds of a `Retry-After` delay (a fraction rounds up); undefined for an HTTP-date. @param {string} value */
function retryAfterSeconds(value) {
  const seconds = Number(value.trim());
  if (value.trim() === '' || !Number.isFinite(seconds) || seconds < 0) return undefined;
  return Math.min(Math.ceil(seconds), 0xffffffff);
}

export default llmPlugin({
  info: {
    name: NAME,
    version: '0.1.0',
    description: 'OpenAI-compatible chat completions (/chat/completions), streamed (JavaScript, host I/O)',
    // Not used by a language model; the contract requires one.
    inputFormat: pcm16(16000),
  },
  open(config) {
    const settings = parseSettings(config.settings, DEFAULTS, NAME);
    validate(settings);
    const url = `${settings.base_url.replace(/\/+$/, '')}/chat/completions`;
    const key = secret('api_key');
    /** @type {Record<string, unknown>[]} */
    let tools = [];
    /** @type {Reply | null} */
    let reply = null;

    /** Cancels the reply in progress, if any; its late events are ignored. */
    function abandon() {
      if (reply) http.cancel(reply.request);
      reply = null;
    }

    /** @param {Message[]} history */
    function send(history) {
      /** @type {Record<string, unknown>} */
      const body = { model: settings.model, messages: history.map(apiMessage), stream: true };
      if (settings.temperature !== null) body.temperature = settings.temperature;
      if (settings.max_tokens !== null) body.max_tokens = settings.max_tokens;
      if (tools.length > 0) {
        body.tools = tools;
        body.tool_choice = 'auto';
        body.parallel_tool_calls = true;
      }
      /** @type {Record<string, string>} */
      const headers = { 'Content-Type': 'application/json', Accept: 'text/event-stream' };
      if (key) headers.Authorization = `Bearer ${key}`;
      try {
        return http.send({ method: 'POST', url, headers, body: JSON.stringify(body) });
      } catch (e) {
        if (!(e instanceof IoError)) throw e;
        if (e.kind === 'denied') throw PluginError.invalidConfig(`cannot reach ${url}: ${e.detail} (add the base_url host to allowed_hosts)`);
        if (e.kind === 'invalid') throw PluginError.invalidConfig(`cannot send to ${url}: ${e.detail}`);
        throw PluginError.internal(`cannot send to ${url}: ${e.detail}`);
      }
    }

    /** Pushes the assembled tool calls, in index order, and forgets them. @param {Reply} r @param {LlmOutput[]} out */
    function handOutCalls(r, out) {
      for (const [index, call] of [...r.calls.entries()].sort((a, b) => a[0] - b[0])) {
        if (call.id === '' || call.name === '') {
          throw PluginError.upstream(`${WHAT}: tool call ${index} never got its id or name`);
        }
        out.push(llmOutput.toolCall(call.id, call.name, call.arguments === '' ? '{}' : call.arguments));
      }
      r.calls.clear();
    }

    /** Gathers streamed tool-call fragments. @param {Reply} r @param {unknown} fragments */
    function feedCalls(r, fragments) {
      if (!Array.isArray(fragments)) throw PluginError.upstream(`${WHAT}: delta.tool_calls is not a list`);
      for (const f of fragments) {
        const index = f?.index;
        if (!Number.isInteger(index) || index < 0) throw PluginError.upstream(`${WHAT}: a tool-call delta without an index`);
        let call = r.calls.get(index);
        if (!call) {
          if (r.calls.size >= MAX_CALLS) throw PluginError.upstream(`${WHAT}: more than ${MAX_CALLS} tool calls in one reply`);
          call = { id: '', name: '', arguments: '' };
          r.calls.set(index, call);
        }
        if (typeof f.id === 'string' && f.id !== '') call.id = f.id;
        if (typeof f.function?.name === 'string' && f.function.name !== '') call.name = f.function.name;
        if (typeof f.function?.arguments === 'string') {
          call.arguments += f.function.arguments;
          if (call.arguments.length > MAX_ARGUMENTS_CHARS) throw PluginError.upstream(`${WHAT}: tool call ${index}'s arguments passed ${MAX_ARGUMENTS_CHARS} characters`);
        }
      }
    }

    /**
     * Turns server-sent events into outputs; true at `data: [DONE]`.
     * @param {Reply} r @param {import('./sse.js').SseEvent[]} events @param {LlmOutput[]} out
     */
    function onSse(r, events, out) {
      for (const event of events) {
        const data = event.data.trim();
        if (data === '[DONE]') {
          handOutCalls(r, out);
          out.push(llmOutput.done());
          return true;
        }
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch (e) {
          throw PluginError.upstream(event.event === 'error'
            ? `${WHAT}: error event: ${data}`
            : `${WHAT}: an event is not JSON: ${/** @type {Error} */ (e).message}`);
        }
        if (chunk?.error !== undefined || event.event === 'error') {
          throw PluginError.upstream(`${WHAT}: error mid-reply: ${errorMessage(data) ?? data}`);
        }
        // Chunks with no choices (e.g. a usage chunk) carry no text.
        const choice = Array.isArray(chunk?.choices) ? chunk.choices[0] : undefined;
        if (!choice) continue;
        const delta = choice.delta ?? {};
        if (typeof delta.content === 'string' && delta.content !== '') out.push(llmOutput.textDelta(delta.content));
        if (delta.tool_calls !== undefined && delta.tool_calls !== null) feedCalls(r, delta.tool_calls);
        if (typeof choice.finish_reason === 'string') {
          r.finished = true;
          handOutCalls(r, out);
          if (choice.finish_reason !== 'stop' && choice.finish_reason !== 'tool_calls') {
            log.info(`${WHAT}: finish_reason ${choice.finish_reason}`);
          }
        }
      }
      return false;
    }

    /**
     * Feeds one event of the reply's request; true when the reply is over (`done` pushed).
     * @param {Reply} r @param {IoEvent} event @param {LlmOutput[]} out
     */
    function onEvent(r, event, out) {
      /** @template T @param {() => T} f @returns {T} */
      const parsing = (f) => {
        try {
          return f();
        } catch (e) {
          if (e instanceof PluginError) throw e;
          throw PluginError.upstream(`${WHAT}: ${/** @type {Error} */ (e).message}`);
        }
      };
      const ok = r.status !== null && r.status >= 200 && r.status < 300;
      switch (event.tag) {
        case 'http-head': {
          r.status = event.val.status;
          if (!(r.status >= 200 && r.status < 300)) {
            const h = event.val.headers.find((x) => x.name.toLowerCase() === 'retry-after');
            r.retryAfter = h ? retryAfterSeconds(h.value) : undefined;
          }
          return false;
        }
        case 'http-chunk': {
          if (r.status === null) throw PluginError.upstream(`${WHAT}: response body before its status line`);
          if (!ok) {
            const take = event.val.data.subarray(0, Math.max(0, MAX_ERROR_BODY_BYTES - r.errorBytes));
            r.errorBody.push(take);
            r.errorBytes += take.length;
            return false;
          }
          return onSse(r, parsing(() => r.events.feed(event.val.data)), out);
        }
        case 'http-done': {
          if (r.status === null) throw PluginError.upstream(`${WHAT}: response ended without a status line`);
          if (!ok) throw statusError(r);
          if (onSse(r, parsing(() => r.events.finish()), out)) return true;
          if (r.finished) {
            handOutCalls(r, out);
            out.push(llmOutput.done());
            return true;
          }
          throw PluginError.upstream(`${WHAT}: the stream ended before data: [DONE] (reply cut short)`);
        }
        case 'failed':
          throw PluginError.upstream(`${WHAT} failed: ${event.val.error}`);
        default:
          return false;
      }
    }

    return {
      /** @param {import('../../plugin-api/js/index.js').LlmInput} input */
      handle(input) {
        /** @type {LlmOutput[]} */
        const out = [];
        switch (input.tag) {
          case 'reply': {
            abandon();
            const request = send(input.val);
            reply = {
              request, status: null, retryAfter: undefined, errorBody: [], errorBytes: 0,
              events: new SseParser(), finished: false, calls: new Map(),
            };
            break;
          }
          case 'cancel':
          case 'hangup':
            abandon();
            break;
          case 'tools':
            tools = input.val.map(offered);
            break;
          case 'io': {
            const current = reply;
            if (current && requestOf(input.val) === current.request) {
              // Taken out first: an error or the end of the reply leaves none in progress.
              reply = null;
              if (!onEvent(current, input.val, out)) reply = current;
            }
            break;
          }
          default:
            break;
        }
        return out;
      },
    };
  },
});
