// The test kit for JavaScript plugins: runs a plugin module in Node (no gateway, no WASM) against
// fake host functions that record every call, as plugin-api/src/testing.rs does for Rust.
//
//   import { Harness } from '../testing.js';           // or '<path to plugin-api/js>/testing.js'
//   import plugin from './plugin.js';
//   const h = Harness.open(plugin, { settings: { mode: 'immediate' } });
//   const out = h.audio(bytes);                          // the outputs of one input
//
// Pipeline stages have a harness each, driven the way the host's stage task drives them:
// `SttHarness` (`audio`, `speak`, `silence`, `endOfTurn`), `LlmHarness` (`reply(history)`,
// `cancel`, `tools`), `TtsHarness` (`text`, `flush`, `cancel`); all have `send`, `io` and
// `hangup`. `io` (below) builds the host's I/O completions — `io.httpHead(request, 200)`,
// `io.httpChunk(request, 'data: …')`, `io.httpDone(request)`, … — and `FakeHost.requests()` reads
// back the HTTP requests a plugin sent.
//
// Run tests with `node --test <dir>` (Node's built-in runner; nothing to install).
import { bindHost, pcm16, pcm16ToBytes, PluginError } from './index.js';

/**
 * @typedef {import('./index.js').SessionInput} SessionInput
 * @typedef {import('./index.js').SessionOutput} SessionOutput
 * @typedef {import('./index.js').SessionConfig} SessionConfig
 * @typedef {import('./index.js').AudioFormat} AudioFormat
 * @typedef {import('./index.js').IoEvent} IoEvent
 * @typedef {import('./index.js').IoHandle} IoHandle
 * @typedef {import('./index.js').SttInput} SttInput
 * @typedef {import('./index.js').SttOutput} SttOutput
 * @typedef {import('./index.js').LlmInput} LlmInput
 * @typedef {import('./index.js').LlmOutput} LlmOutput
 * @typedef {import('./index.js').Message} Message
 * @typedef {import('./index.js').Tool} Tool
 * @typedef {import('./index.js').ToolCall} ToolCall
 * @typedef {import('./index.js').TtsInput} TtsInput
 * @typedef {import('./index.js').TtsOutput} TtsOutput
 * @typedef {{ method: string, url: string, headers: Record<string, string>, body: string, bodyBytes: Uint8Array, json: () => any, handle: IoHandle | undefined }} SentRequest
 */

/**
 * Fake host functions: records calls in `calls` (`{ fn, args }`), hands out handles 1, 2, …,
 * answers `secret` from `secrets`, and keeps the log lines in `logs`. Set `refuse` to an
 * `io-error` variant (`{ tag: 'denied', val: '…' }`) to make the next I/O call fail.
 */
export class FakeHost {
  constructor() {
    /** @type {{ fn: string, args: unknown[] }[]} */
    this.calls = [];
    /** @type {{ level: string, message: string }[]} */
    this.logs = [];
    /** @type {Record<string, string>} */
    this.secrets = {};
    /** Milliseconds since the epoch that `nowMs` returns; tests may move it. */
    this.now = 1_700_000_000_000;
    this.nextHandle = 1;
    /** @type {{ tag: string, val: string } | null} */
    this.refuse = null;
    /** Every call, kept when `takeCalls` forgets them. @type {{ fn: string, args: unknown[] }[]} */
    this.allCalls = [];
    /** @type {{ request: import('./index.js').HttpRequest, handle: IoHandle | undefined }[]} */
    this.sent = [];
  }

  /** @returns {import('./index.js').HostFunctions} */
  functions() {
    const record = (/** @type {string} */ fn, /** @type {unknown[]} */ args) => {
      this.calls.push({ fn, args });
      this.allCalls.push({ fn, args });
    };
    const io = (/** @type {string} */ fn, /** @type {unknown[]} */ args, /** @type {boolean} */ returnsHandle) => {
      record(fn, args);
      const request = fn === 'httpSend' ? { request: /** @type {any} */ (args[0]), handle: /** @type {IoHandle | undefined} */ (undefined) } : null;
      if (request) this.sent.push(request);
      if (this.refuse) {
        const payload = this.refuse;
        this.refuse = null;
        throw Object.assign(new Error(`${payload.tag}: ${payload.val}`), { payload });
      }
      const handle = returnsHandle ? this.nextHandle++ : undefined;
      if (request) request.handle = handle;
      return handle;
    };
    return /** @type {any} */ ({
      log: (/** @type {string} */ level, /** @type {string} */ message) => {
        this.logs.push({ level, message });
      },
      nowMs: () => BigInt(this.now),
      secret: (/** @type {string} */ name) => {
        record('secret', [name]);
        return this.secrets[name];
      },
      wsConnect: (/** @type {unknown[]} */ ...args) => io('wsConnect', args, true),
      wsSend: (/** @type {unknown[]} */ ...args) => io('wsSend', args, false),
      wsClose: (/** @type {unknown[]} */ ...args) => io('wsClose', args, false),
      httpSend: (/** @type {unknown[]} */ ...args) => io('httpSend', args, true),
      setTimer: (/** @type {unknown[]} */ ...args) => io('setTimer', args, true),
      cancel: (/** @type {unknown[]} */ ...args) => {
        record('cancel', args);
      },
    });
  }

  /** The calls so far, then forgets them. */
  takeCalls() {
    const calls = this.calls;
    this.calls = [];
    return calls;
  }

  /**
   * The HTTP requests sent so far (`http.send`), in order and not forgotten: header names lower
   * case, the body as text (and bytes), `json()` to parse it, and the handle the host gave it
   * (undefined when refused).
   * @returns {SentRequest[]}
   */
  requests() {
    return this.sent.map(({ request, handle }) => {
      const headers = /** @type {Record<string, string>} */ ({});
      for (const { name, value } of request.headers) headers[name.toLowerCase()] = value;
      const body = new TextDecoder().decode(request.body);
      return { method: request.method, url: request.url, headers, body, bodyBytes: request.body, json: () => JSON.parse(body), handle };
    });
  }

  /** The handles cancelled so far (`timers.cancel`), in order. @returns {IoHandle[]} */
  cancelled() {
    return this.allCalls.flatMap((c) => (c.fn === 'cancel' ? [/** @type {IoHandle} */ (c.args[0])] : []));
  }
}

/**
 * A session config as the host builds it.
 * @param {{ settings?: object | string, inputFormat?: AudioFormat, greeting?: string, parameters?: [string, string][] }} [opts]
 * @returns {SessionConfig}
 */
export function configFor(opts = {}) {
  const settings = typeof opts.settings === 'string' ? opts.settings : JSON.stringify(opts.settings ?? {});
  return {
    call: {
      callSid: 'CAtest', streamSid: 'MZtest', from: '+15550001111', to: '+15550002222',
      direction: 'inbound', agent: 'test', parameters: opts.parameters ?? [],
    },
    settings,
    greeting: opts.greeting,
    inputFormat: opts.inputFormat ?? pcm16(),
  };
}

/**
 * One session of a plugin — a realtime session or a pipeline stage's — driven input by input.
 * The plugin's errors come back as thrown `PluginError`s (kind in `.payload.tag`). The
 * subclasses add the inputs of their world; this class is the part they share.
 * @template I, O
 */
export class SessionHarness {
  /** Which declaration (`realtimePlugin`, `sttPlugin`, …) this harness drives; see index.js `WORLDS`. */
  static kind = '';

  /**
   * Opens a session of `plugin` (the module's default export) with a config as the host builds
   * it, and `secrets` granted. Fails when `plugin` is a different world's declaration.
   * @template {SessionHarness<any, any>} H
   * @this {{ new (session: any, host: FakeHost, config: SessionConfig): H, kind: string }}
   * @param {{ info: import('./index.js').PluginInfo, open: (c: SessionConfig) => any, kind?: string }} plugin
   * @param {Parameters<typeof configFor>[0] & { secrets?: Record<string, string> }} [opts]
   * @returns {H}
   */
  static open(plugin, opts = {}) {
    if (plugin.kind && this.kind && plugin.kind !== this.kind) {
      throw new TypeError(`${this.name} drives ${this.kind} plugins; this module declares ${plugin.kind}Plugin`);
    }
    const host = new FakeHost();
    Object.assign(host.secrets, opts.secrets ?? {});
    bindHost(host.functions());
    const config = configFor({ inputFormat: plugin.info.inputFormat, ...opts });
    return new this(plugin.open(config), host, config);
  }

  /** @param {any} session @param {FakeHost} host @param {SessionConfig} config */
  constructor(session, host, config) {
    this.session = session;
    this.host = host;
    this.config = config;
  }

  /** Feeds one input; returns its outputs. @param {I} input @returns {O[]} */
  send(input) {
    bindHost(this.host.functions());
    return this.session.handle(input) ?? [];
  }

  /** A host I/O completion (build one with `io`). @param {IoEvent} event @returns {O[]} */
  io(event) {
    return this.send(/** @type {I} */ (/** @type {unknown} */ ({ tag: 'io', val: event })));
  }

  /** The call ends. @returns {O[]} */
  hangup() {
    return this.send(/** @type {I} */ (/** @type {unknown} */ ({ tag: 'hangup' })));
  }
}

/**
 * A session fed caller audio (a realtime session or a recognizer): 20 ms frames in the
 * session's input format, timestamps counting up.
 * @template I, O
 * @extends {SessionHarness<I, O>}
 */
class AudioHarness extends SessionHarness {
  /** @param {any} session @param {FakeHost} host @param {SessionConfig} config */
  constructor(session, host, config) {
    super(session, host, config);
    this.timestampMs = 0;
  }

  /** 20 ms (or any length) of caller audio in the session's input format. @param {Uint8Array | Int16Array} data @returns {O[]} */
  audio(data) {
    const bytes = data instanceof Int16Array ? pcm16ToBytes(data) : data;
    const input = { tag: 'audio', val: { format: this.config.inputFormat, data: bytes, timestampMs: BigInt(this.timestampMs) } };
    this.timestampMs += 20;
    return this.send(/** @type {I} */ (/** @type {unknown} */ (input)));
  }

  /**
   * PCM16 samples as 20 ms frames; returns all their outputs.
   * @param {Int16Array} samples at the input format's rate
   * @returns {O[]}
   */
  speak(samples) {
    const per = (this.config.inputFormat.sampleRate / 1000) * 20;
    const out = [];
    for (let i = 0; i < samples.length; i += per) out.push(...this.audio(samples.slice(i, i + per)));
    return out;
  }

  /** `ms` of silence as 20 ms frames. @param {number} ms @returns {O[]} */
  silence(ms) {
    return this.speak(new Int16Array((this.config.inputFormat.sampleRate / 1000) * ms));
  }
}

/**
 * One session of a realtime plugin (`realtimePlugin`).
 * @extends {AudioHarness<SessionInput, SessionOutput>}
 */
export class Harness extends AudioHarness {
  static kind = 'realtime';

  /** A DTMF key. @param {string} digit */
  dtmf(digit) {
    return this.send({ tag: 'dtmf', val: digit });
  }
}

/**
 * One recognizer of a speech-to-text stage (`sttPlugin`): `audio`, `speak`, `silence`, then
 * `endOfTurn` when the host's endpointing would end the turn.
 * @extends {AudioHarness<SttInput, SttOutput>}
 */
export class SttHarness extends AudioHarness {
  static kind = 'stt';

  /** The host's endpointing ends the caller's turn. */
  endOfTurn() {
    return this.send({ tag: 'end-of-turn' });
  }
}

/**
 * One conversation of a language-model stage (`llmPlugin`): `reply(history)` (build messages
 * with `message`), `cancel`, `tools`.
 * @extends {SessionHarness<LlmInput, LlmOutput>}
 */
export class LlmHarness extends SessionHarness {
  static kind = 'llm';

  /** Asks for a reply to `history` (oldest first). @param {Message[]} history */
  reply(history) {
    return this.send({ tag: 'reply', val: history });
  }

  /** The caller barged in: stop the reply in progress. */
  cancel() {
    return this.send({ tag: 'cancel' });
  }

  /**
   * The agent's tools. `parameters` may be a JSON Schema object (serialised here) or its text.
   * @param {{ name: string, description?: string, parameters?: object | string }[]} tools
   */
  tools(tools) {
    const list = tools.map((t) => ({
      name: t.name,
      description: t.description ?? '',
      parameters: typeof t.parameters === 'string' ? t.parameters : JSON.stringify(t.parameters ?? { type: 'object', properties: {} }),
    }));
    return this.send({ tag: 'tools', val: list });
  }
}

/**
 * One synthesizer of a text-to-speech stage (`ttsPlugin`): `text`, `flush`, `cancel`.
 * @extends {SessionHarness<TtsInput, TtsOutput>}
 */
export class TtsHarness extends SessionHarness {
  static kind = 'tts';

  /** A sentence or clause to speak after what came before. @param {string} text */
  text(text) {
    return this.send({ tag: 'text', val: text });
  }

  /** No more text for this utterance. */
  flush() {
    return this.send({ tag: 'flush' });
  }

  /** The caller barged in: drop everything not yet returned. */
  cancel() {
    return this.send({ tag: 'cancel' });
  }
}

/** History messages as the host sends them to a language model (`LlmHarness.reply`). */
export const message = Object.freeze({
  /** @param {string} content @returns {Message} */
  system: (content) => ({ role: 'system', content, toolCalls: [] }),
  /** @param {string} content @returns {Message} */
  user: (content) => ({ role: 'user', content, toolCalls: [] }),
  /** @param {string} content @param {ToolCall[]} [toolCalls] @returns {Message} */
  assistant: (content, toolCalls = []) => ({ role: 'assistant', content, toolCalls }),
  /** A tool's result. @param {string} toolCallId @param {string} content @returns {Message} */
  tool: (toolCallId, content) => ({ role: 'tool', content, toolCalls: [], toolCallId }),
});

/**
 * The host's I/O completions, as the `io` input carries them: feed them with `harness.io(…)`.
 * Text is UTF-8 encoded; `headers` may be an object or a list of `{ name, value }`.
 */
export const io = Object.freeze({
  /** @param {IoHandle} request @param {number} status @param {Record<string, string> | import('./index.js').Header[]} [headers] @returns {IoEvent} */
  httpHead: (request, status, headers = {}) => ({
    tag: 'http-head',
    val: { request, status, headers: Array.isArray(headers) ? headers : Object.entries(headers).map(([name, value]) => ({ name, value })) },
  }),
  /** @param {IoHandle} request @param {Uint8Array | string} data @returns {IoEvent} */
  httpChunk: (request, data) => ({ tag: 'http-chunk', val: { request, data: typeof data === 'string' ? new TextEncoder().encode(data) : data } }),
  /** @param {IoHandle} request @returns {IoEvent} */
  httpDone: (request) => ({ tag: 'http-done', val: request }),
  /** An operation failed after it started. @param {IoHandle} target @param {string} error @returns {IoEvent} */
  failed: (target, error) => ({ tag: 'failed', val: { target, error } }),
  /** @param {IoHandle} handle @returns {IoEvent} */
  timer: (handle) => ({ tag: 'timer', val: handle }),
  /** @param {IoHandle} socket @returns {IoEvent} */
  wsOpened: (socket) => ({ tag: 'ws-opened', val: socket }),
  /** A text (string) or binary message. @param {IoHandle} socket @param {string | Uint8Array} message @returns {IoEvent} */
  wsMessage: (socket, message) => ({
    tag: 'ws-message',
    val: { socket, message: typeof message === 'string' ? { tag: 'text', val: message } : { tag: 'binary', val: message } },
  }),
  /** @param {IoHandle} socket @param {number} [code] @param {string} [reason] @returns {IoEvent} */
  wsClosed: (socket, code = 1000, reason = '') => ({ tag: 'ws-closed', val: { socket, code, reason } }),
});

/**
 * Calls `open` and returns the `PluginError` it threw (fails when it did not throw one).
 * @param {{ open: (c: SessionConfig) => any, info: any }} plugin any world's declaration
 * @param {Parameters<typeof configFor>[0] & { secrets?: Record<string, string> }} opts
 * @returns {PluginError}
 */
export function openError(plugin, opts) {
  const host = new FakeHost();
  Object.assign(host.secrets, opts.secrets ?? {});
  bindHost(host.functions());
  try {
    plugin.open(configFor({ inputFormat: plugin.info.inputFormat, ...opts }));
  } catch (e) {
    if (e instanceof PluginError) return e;
    throw e;
  }
  throw new Error('open succeeded');
}

/** The PCM16 bytes of every `play` output, joined. @param {SessionOutput[]} outputs @returns {Uint8Array} */
export function playedBytes(outputs) {
  return joinBytes(outputs.flatMap((o) => (o.tag === 'play' ? [o.val.data] : [])));
}

/** The names of `mark` outputs. @param {SessionOutput[]} outputs */
export function marks(outputs) {
  return outputs.flatMap((o) => (o.tag === 'mark' ? [o.val] : []));
}

/** The text of a reply's `text-delta` outputs, joined. @param {LlmOutput[]} outputs @returns {string} */
export function replyText(outputs) {
  return outputs.map((o) => (o.tag === 'text-delta' ? o.val : '')).join('');
}

/** The `tool-call` outputs' calls. @param {LlmOutput[]} outputs @returns {ToolCall[]} */
export function toolCalls(outputs) {
  return outputs.flatMap((o) => (o.tag === 'tool-call' ? [o.val] : []));
}

/** The `transcript` outputs of a recognizer, as `{ text, isFinal }`. @param {SttOutput[]} outputs */
export function transcripts(outputs) {
  return outputs.flatMap((o) => (o.tag === 'transcript' ? [o.val] : []));
}

/** The bytes of a synthesizer's `audio` outputs, joined. @param {TtsOutput[]} outputs @returns {Uint8Array} */
export function audioBytes(outputs) {
  return joinBytes(outputs.flatMap((o) => (o.tag === 'audio' ? [o.val.data] : [])));
}

/** @param {Uint8Array[]} parts @returns {Uint8Array} */
function joinBytes(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
