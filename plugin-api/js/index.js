// Switchboard plugin SDK for JavaScript: thin, typed helpers over the plugin contract
// (plugin-api/wit/plugin.wit, package switchboard:plugin@0.2.0), mirroring the Rust SDK
// (plugin-api/src). Plain ES module with JSDoc types; the contract's own types are generated from
// the WIT into types/ (see gen-types.mjs).
//
// A plugin module default-exports one of four declarations, one per world of the contract:
// `realtimePlugin({ info, open })` (speech to speech), or a pipeline stage — `sttPlugin`,
// `llmPlugin`, `ttsPlugin`, same shape. `build.mjs` reads which world the declaration names,
// wraps it into that world's export (`realtime`, `stt`, `llm` or `tts`) and binds the host
// functions; in Node (tests) `testing.js` binds fakes instead, so the same plugin code runs in
// both.
//
// Inputs and outputs are the contract's variants as componentize-js represents them:
// `{ tag: 'audio', val: AudioFrame }`, `{ tag: 'hangup' }`, … (types/interfaces/*.d.ts). Audio
// data is a `Uint8Array` of whole samples in the frame's `format`.

/// <reference path="./types/realtime-plugin.d.ts" />
/// <reference path="./types/stt-plugin.d.ts" />
/// <reference path="./types/llm-plugin.d.ts" />
/// <reference path="./types/tts-plugin.d.ts" />

/**
 * @typedef {import('switchboard:plugin/types@0.2.0').AudioFormat} AudioFormat
 * @typedef {import('switchboard:plugin/types@0.2.0').AudioFrame} AudioFrame
 * @typedef {import('switchboard:plugin/types@0.2.0').SessionConfig} SessionConfig
 * @typedef {import('switchboard:plugin/types@0.2.0').PluginInfo} PluginInfo
 * @typedef {import('switchboard:plugin/types@0.2.0').LogLevel} LogLevel
 * @typedef {import('switchboard:plugin/types@0.2.0').Header} Header
 * @typedef {import('switchboard:plugin/types@0.2.0').Payload} Payload
 * @typedef {import('switchboard:plugin/types@0.2.0').HttpRequest} HttpRequest
 * @typedef {import('switchboard:plugin/types@0.2.0').IoEvent} IoEvent
 * @typedef {import('switchboard:plugin/types@0.2.0').IoHandle} IoHandle
 * @typedef {import('switchboard:plugin/types@0.2.0').PluginError} PluginErrorVariant
 * @typedef {import('switchboard:plugin/realtime@0.2.0').SessionInput} SessionInput
 * @typedef {import('switchboard:plugin/realtime@0.2.0').SessionOutput} SessionOutput
 * @typedef {import('switchboard:plugin/tools@0.2.0').Tool} Tool
 * @typedef {import('switchboard:plugin/tools@0.2.0').ToolCall} ToolCall
 * @typedef {import('switchboard:plugin/tools@0.2.0').ToolResult} ToolResult
 * @typedef {import('switchboard:plugin/stt@0.2.0').SttInput} SttInput
 * @typedef {import('switchboard:plugin/stt@0.2.0').SttOutput} SttOutput
 * @typedef {import('switchboard:plugin/llm@0.2.0').LlmInput} LlmInput
 * @typedef {import('switchboard:plugin/llm@0.2.0').LlmOutput} LlmOutput
 * @typedef {import('switchboard:plugin/llm@0.2.0').Message} Message
 * @typedef {import('switchboard:plugin/llm@0.2.0').Role} Role
 * @typedef {import('switchboard:plugin/tts@0.2.0').TtsInput} TtsInput
 * @typedef {import('switchboard:plugin/tts@0.2.0').TtsOutput} TtsOutput
 * @typedef {typeof import('switchboard:plugin/host@0.2.0')} HostFunctions
 */

// ---------------------------------------------------------------------------------------------
// Errors

/** The kinds of `plugin-error` (WIT `types.plugin-error`). */
export const ErrorKind = Object.freeze({
  InvalidConfig: 'invalid-config',
  Unauthorized: 'unauthorized',
  Upstream: 'upstream',
  RateLimited: 'rate-limited',
  Unsupported: 'unsupported',
  Internal: 'internal',
});

/**
 * Why a plugin refused or failed: throw one from `open` or `handle`. Its `payload` is the WIT
 * `plugin-error` the host receives (componentize-js reads a thrown value's `payload`). Any other
 * exception reaches the host as `internal` with its message.
 */
export class PluginError extends Error {
  /**
   * @param {PluginErrorVariant['tag']} kind
   * @param {string | number | undefined} detail the message (for `rate-limited`: retry-after
   *   seconds, or undefined)
   */
  constructor(kind, detail) {
    super(`${kind}: ${detail ?? ''}`);
    this.name = 'PluginError';
    /** @type {PluginErrorVariant} */
    this.payload = /** @type {PluginErrorVariant} */ ({ tag: kind, val: detail });
  }
  /** @param {string} message which setting and why */
  static invalidConfig(message) { return new PluginError('invalid-config', message); }
  /** @param {string} message */
  static unauthorized(message) { return new PluginError('unauthorized', message); }
  /** @param {string} message */
  static upstream(message) { return new PluginError('upstream', message); }
  /** @param {number} [retryAfterSeconds] */
  static rateLimited(retryAfterSeconds) { return new PluginError('rate-limited', retryAfterSeconds); }
  /** @param {string} message */
  static unsupported(message) { return new PluginError('unsupported', message); }
  /** @param {string} message */
  static internal(message) { return new PluginError('internal', message); }
}

/**
 * A host I/O call refused at once (WIT `io-error`: `denied`, `limit` or `invalid`).
 */
export class IoError extends Error {
  /** @param {{ tag: string, val: string }} variant */
  constructor(variant) {
    super(`${variant.tag}: ${variant.val}`);
    this.name = 'IoError';
    /** @type {'denied' | 'limit' | 'invalid'} */
    this.kind = /** @type {any} */ (variant.tag);
    this.detail = variant.val;
  }
}

/** @param {unknown} e @returns {PluginErrorVariant} */
function toPluginError(e) {
  if (e instanceof PluginError) return e.payload;
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { tag: 'internal', val: message };
}

// ---------------------------------------------------------------------------------------------
// Host functions

/** @type {HostFunctions | null} */
let hostFns = null;

/**
 * Binds the host functions: `build.mjs`'s entry module passes the component's imports; the test
 * kit passes fakes. Plugins never call this.
 * @param {HostFunctions} fns
 */
export function bindHost(fns) {
  hostFns = fns;
}

/** @returns {HostFunctions} */
function h() {
  if (!hostFns) throw new Error('switchboard host functions are not bound (build with build.mjs, or test with testing.js)');
  return hostFns;
}

/**
 * Runs a host I/O call, turning componentize-js's thrown `io-error` into an `IoError`.
 * @template T @param {() => T} f @returns {T}
 */
function io(f) {
  try {
    return f();
  } catch (e) {
    const p = /** @type {any} */ (e)?.payload;
    if (p && typeof p.tag === 'string') throw new IoError(p);
    throw e;
  }
}

/** Log lines go to the host's log, inside the call's span (call sid, agent, plugin). */
export const log = Object.freeze({
  /** @param {string} m */ trace: (m) => h().log('trace', m),
  /** @param {string} m */ debug: (m) => h().log('debug', m),
  /** @param {string} m */ info: (m) => h().log('info', m),
  /** @param {string} m */ warn: (m) => h().log('warn', m),
  /** @param {string} m */ error: (m) => h().log('error', m),
});

/** Milliseconds since the Unix epoch, from the host's clock (a Number). */
export function nowMs() {
  return Number(h().nowMs());
}

/**
 * A secret the agent grants this plugin (the plugin's `secrets` in agents.toml:
 * `realtime.secrets`, or a pipeline stage's, e.g. `pipeline.llm.secrets`), or undefined.
 * @param {string} name
 * @returns {string | undefined}
 */
export function secret(name) {
  return h().secret(name);
}

/** WebSockets the host opens for the session. Completions arrive as `io` inputs. */
export const ws = Object.freeze({
  /**
   * Opens `ws://…`/`wss://…` (host in the agent's `allowed_hosts`); `ws-opened` or `failed`
   * follows. Throws `IoError`.
   * @param {string} url
   * @param {Record<string, string> | Header[]} [headers]
   * @returns {IoHandle}
   */
  connect(url, headers = {}) {
    const list = Array.isArray(headers)
      ? headers
      : Object.entries(headers).map(([name, value]) => ({ name, value }));
    return io(() => h().wsConnect(url, list));
  },
  /**
   * Queues a message: a string is sent as a text message, bytes as a binary one. Throws `IoError`.
   * @param {IoHandle} socket
   * @param {string | Uint8Array} message
   */
  send(socket, message) {
    /** @type {Payload} */
    const payload = typeof message === 'string' ? { tag: 'text', val: message } : { tag: 'binary', val: message };
    io(() => h().wsSend(socket, payload));
  },
  /** Closes a socket; `ws-closed` follows. Throws `IoError`. @param {IoHandle} socket */
  close(socket) {
    io(() => h().wsClose(socket));
  },
});

/** HTTP requests the host sends for the session; the response streams back as `io` inputs. */
export const http = Object.freeze({
  /**
   * Sends a request; `http-head`, `http-chunk`s and `http-done` (or `failed`) follow. Throws
   * `IoError`.
   * @param {{ method?: string, url: string, headers?: Record<string, string> | Header[], body?: Uint8Array | string }} request
   * @returns {IoHandle}
   */
  send({ method = 'GET', url, headers = {}, body = new Uint8Array() }) {
    const list = Array.isArray(headers)
      ? headers
      : Object.entries(headers).map(([name, value]) => ({ name, value }));
    const bytes = typeof body === 'string' ? new TextEncoder().encode(body) : body;
    return io(() => h().httpSend({ method, url, headers: list, body: bytes }));
  },
  /**
   * Cancels a request whose response has not completed (the same host call as
   * `timers.cancel`); no more events of it follow.
   * @param {IoHandle} request
   */
  cancel(request) {
    h().cancel(request);
  },
});

/** One-shot timers; a `timer` io event follows. */
export const timers = Object.freeze({
  /** Starts a timer of `delayMs` milliseconds. Throws `IoError`. @param {number} delayMs @returns {IoHandle} */
  set(delayMs) {
    return io(() => h().setTimer(delayMs));
  },
  /** Cancels a timer or HTTP request that has not completed; no event follows. @param {IoHandle} handle */
  cancel(handle) {
    h().cancel(handle);
  },
});

// ---------------------------------------------------------------------------------------------
// Audio

/**
 * PCM16 (signed 16-bit little-endian, mono) at `sampleRate` Hz.
 * @param {number} [sampleRate] Hz, default 8000
 * @returns {AudioFormat}
 */
export function pcm16(sampleRate = 8000) {
  return { encoding: 'pcm16', sampleRate };
}

/** G.711 μ-law at 8000 Hz. @returns {AudioFormat} */
export function mulaw() {
  return { encoding: 'mulaw', sampleRate: 8000 };
}

/**
 * An audio frame for output (timestamp 0).
 * @param {Uint8Array | Int16Array} data bytes in `format`, or PCM16 samples
 * @param {AudioFormat} [format] default PCM16 at 8000 Hz
 * @returns {AudioFrame}
 */
export function frame(data, format = pcm16()) {
  const bytes = data instanceof Int16Array ? pcm16ToBytes(data) : data;
  return { format, data: bytes, timestampMs: 0n };
}

/** PCM16 samples as little-endian bytes. @param {Int16Array | number[]} samples @returns {Uint8Array} */
export function pcm16ToBytes(samples) {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i++) view.setInt16(i * 2, samples[i], true);
  return out;
}

/** Little-endian PCM16 bytes as samples (a trailing odd byte is dropped). @param {Uint8Array} bytes @returns {Int16Array} */
export function pcm16FromBytes(bytes) {
  const n = bytes.length >> 1;
  const out = new Int16Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
  return out;
}

/** Root-mean-square level of PCM16 bytes, in PCM16 units. @param {Uint8Array} bytes @returns {number} */
export function rms(bytes) {
  const s = pcm16FromBytes(bytes);
  if (s.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < s.length; i++) sum += s[i] * s[i];
  return Math.sqrt(sum / s.length);
}

/** Duration of `bytes` in `format`, in milliseconds. @param {Uint8Array} bytes @param {AudioFormat} format */
export function durationMs(bytes, format) {
  const bytesPerSample = format.encoding === 'pcm16' ? 2 : 1;
  return (bytes.length / bytesPerSample) * 1000 / format.sampleRate;
}

/** Base64 of bytes (for JSON wire protocols). @param {Uint8Array} bytes @returns {string} */
export function toBase64(bytes) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += abc[(n >> 18) & 63] + abc[(n >> 12) & 63] + abc[(n >> 6) & 63] + abc[n & 63];
  }
  if (i < bytes.length) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8);
    out += abc[(n >> 18) & 63] + abc[(n >> 12) & 63];
    out += i + 1 < bytes.length ? abc[(n >> 6) & 63] + '=' : '==';
  }
  return out;
}

/** Bytes of base64 text; throws on a bad character. @param {string} text @returns {Uint8Array} */
export function fromBase64(text) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const clean = text.replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (const ch of clean) {
    const v = abc.indexOf(ch);
    if (v < 0) throw new Error(`bad base64 character ${JSON.stringify(ch)}`);
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out.subarray(0, o);
}

// ---------------------------------------------------------------------------------------------
// Outputs (WIT `realtime.session-output`)

export const output = Object.freeze({
  /** Queue audio for the caller. @param {AudioFrame} f @returns {SessionOutput} */
  play: (f) => ({ tag: 'play', val: f }),
  /** Drop queued audio not yet played (barge-in). @returns {SessionOutput} */
  clearPlayback: () => ({ tag: 'clear-playback' }),
  /** Ask for `mark-played` once the audio queued so far has played. @param {string} name @returns {SessionOutput} */
  mark: (name) => ({ tag: 'mark', val: name }),
  /** What the caller said. @param {string} text @param {boolean} [isFinal] @returns {SessionOutput} */
  userTranscript: (text, isFinal = true) => ({ tag: 'user-transcript', val: { text, isFinal } }),
  /** What the agent said. @param {string} text @param {boolean} [isFinal] @returns {SessionOutput} */
  agentTranscript: (text, isFinal = true) => ({ tag: 'agent-transcript', val: { text, isFinal } }),
  /** Transfer the call to an E.164 number. @param {string} number @returns {SessionOutput} */
  transfer: (number) => ({ tag: 'transfer', val: number }),
  /** End the call once the queued audio has played. @returns {SessionOutput} */
  hangUp: () => ({ tag: 'hang-up' }),
  /** Call a tool the host runs. @param {string} id @param {string} name @param {unknown} args JSON-able @returns {SessionOutput} */
  toolCall: (id, name, args) => ({ tag: 'tool-call', val: { id, name, arguments: typeof args === 'string' ? args : JSON.stringify(args) } }),
});

// ---------------------------------------------------------------------------------------------
// Pipeline-stage outputs (WIT `stt.stt-output`, `llm.llm-output`, `tts.tts-output`)

/** What a recognizer (`sttPlugin`) returns. */
export const sttOutput = Object.freeze({
  /** Speech began (optional: the host's VAD detects it too). @returns {SttOutput} */
  speechStarted: () => ({ tag: 'speech-started' }),
  /**
   * Text of the caller's current turn; `isFinal` false for interim text that may still change.
   * @param {string} text @param {boolean} [isFinal] @returns {SttOutput}
   */
  transcript: (text, isFinal = true) => ({ tag: 'transcript', val: { text, isFinal } }),
  /** The recognizer's own endpointing: the turn is over (after its final transcript). @returns {SttOutput} */
  endOfTurn: () => ({ tag: 'end-of-turn' }),
});

/** What a conversation (`llmPlugin`) returns. */
export const llmOutput = Object.freeze({
  /** More text of the reply. @param {string} text @returns {LlmOutput} */
  textDelta: (text) => ({ tag: 'text-delta', val: text }),
  /** The reply is complete (after its tool calls, if it made any). @returns {LlmOutput} */
  done: () => ({ tag: 'done' }),
  /**
   * The reply calls a tool (whole). `args`: the arguments, JSON text or a JSON-able object.
   * @param {string} id @param {string} name @param {unknown} args @returns {LlmOutput}
   */
  toolCall: (id, name, args) => ({ tag: 'tool-call', val: { id, name, arguments: typeof args === 'string' ? args : JSON.stringify(args) } }),
});

/** What a synthesizer (`ttsPlugin`) returns. */
export const ttsOutput = Object.freeze({
  /**
   * Audio of the utterance: PCM16 at any rate, or μ-law at 8 kHz (the host converts).
   * @param {AudioFrame} f @returns {TtsOutput}
   */
  audio: (f) => ({ tag: 'audio', val: f }),
  /** Everything given before the last `flush` has been returned as audio. @returns {TtsOutput} */
  utteranceDone: () => ({ tag: 'utterance-done' }),
});

// ---------------------------------------------------------------------------------------------
// Settings

/**
 * Parses the agent's settings (a JSON object) over `defaults`: every key must be one of
 * `defaults`' keys and of the same JSON type (number, string, boolean; any value when the default
 * is null). Throws `PluginError` `invalid-config` naming the key and why.
 * @template {Record<string, unknown>} T
 * @param {string} json `config.settings`
 * @param {T} defaults
 * @param {string} [plugin] name for messages
 * @returns {T}
 */
export function parseSettings(json, defaults, plugin = 'plugin') {
  let value;
  try {
    value = JSON.parse(json || '{}');
  } catch (e) {
    throw PluginError.invalidConfig(`${plugin} settings: not JSON: ${/** @type {Error} */ (e).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw PluginError.invalidConfig(`${plugin} settings: expected a JSON object`);
  }
  const out = /** @type {Record<string, unknown>} */ ({ ...defaults });
  for (const [key, v] of Object.entries(value)) {
    if (!Object.prototype.hasOwnProperty.call(defaults, key)) {
      throw PluginError.invalidConfig(`${plugin} settings: unknown key \`${key}\` (known: ${Object.keys(defaults).join(', ')})`);
    }
    const d = defaults[key];
    if (d !== null && d !== undefined && typeof v !== typeof d) {
      throw PluginError.invalidConfig(`${plugin} settings: \`${key}\` must be a ${typeof d}, not ${JSON.stringify(v)}`);
    }
    out[key] = v;
  }
  return /** @type {T} */ (out);
}

// ---------------------------------------------------------------------------------------------
// The plugin

/**
 * One call's state: a realtime session, or a pipeline stage's recognizer, conversation or
 * synthesizer.
 * @template I, O
 * @typedef {object} StageSession
 * @property {(input: I) => O[] | void} handle Feeds one input; returns the outputs it caused, in
 *   order (nothing = none). Throw `PluginError` to fail the call.
 */

/**
 * What a plugin module declares.
 * @template I, O
 * @typedef {object} PluginSpec
 * @property {PluginInfo} info what `describe` returns (name, version, description, input
 *   format: the caller audio a realtime plugin or a recognizer wants; required but unused by
 *   the language model and the synthesizer)
 * @property {(config: SessionConfig) => StageSession<I, O>} open starts a session for one call;
 *   throw `PluginError` (e.g. `invalidConfig`) to refuse it
 */

/** @typedef {StageSession<SessionInput, SessionOutput>} Session a realtime session */
/** @typedef {PluginSpec<SessionInput, SessionOutput>} RealtimePluginSpec */
/** @typedef {PluginSpec<SttInput, SttOutput>} SttPluginSpec */
/** @typedef {PluginSpec<LlmInput, LlmOutput>} LlmPluginSpec */
/** @typedef {PluginSpec<TtsInput, TtsOutput>} TtsPluginSpec */

/**
 * The worlds of the contract a plugin can implement: the WIT world, the interface it exports,
 * and the class name componentize-js gives that interface's resource.
 */
export const WORLDS = Object.freeze({
  realtime: Object.freeze({ world: 'realtime-plugin', exportName: 'realtime', resource: 'Session' }),
  stt: Object.freeze({ world: 'stt-plugin', exportName: 'stt', resource: 'Recognizer' }),
  llm: Object.freeze({ world: 'llm-plugin', exportName: 'llm', resource: 'Conversation' }),
  tts: Object.freeze({ world: 'tts-plugin', exportName: 'tts', resource: 'Synthesizer' }),
});

/**
 * A declared plugin: the spec, which world it implements, and its component export.
 * @template S
 * @typedef {S & { kind: keyof typeof WORLDS, world: string, exportName: string, exports: () => any }} Declared
 */

/**
 * Wraps `spec` into the component export of `kind`'s world: `describe` and the resource class
 * whose static `open` and `handle` turn thrown errors into the WIT `plugin-error`.
 * @template {PluginSpec<any, any>} S
 * @param {keyof typeof WORLDS} kind
 * @param {S} spec
 * @returns {Declared<S>}
 */
function declare(kind, spec) {
  if (!spec || typeof spec.open !== 'function' || !spec.info) {
    throw new TypeError(`${kind}Plugin: expected { info, open }`);
  }
  const { world, exportName, resource } = WORLDS[kind];
  return {
    ...spec,
    kind,
    world,
    exportName,
    /** The component's export (WIT interface `exportName`), for build.mjs's entry. */
    exports() {
      class Resource {
        /** @param {StageSession<any, any>} inner */
        constructor(inner) {
          this.inner = inner;
        }
        /** @param {SessionConfig} config */
        static open(config) {
          let inner;
          try {
            inner = spec.open(config);
          } catch (e) {
            throw { payload: toPluginError(e) };
          }
          return new Resource(inner);
        }
        /** @param {unknown} input */
        handle(input) {
          try {
            return this.inner.handle(input) ?? [];
          } catch (e) {
            throw { payload: toPluginError(e) };
          }
        }
      }
      Object.defineProperty(Resource, 'name', { value: resource });
      return { describe: () => spec.info, [resource]: Resource };
    },
  };
}

/**
 * Declares a realtime (speech-to-speech) plugin (world `realtime-plugin`); default-export the
 * result. `handle` gets `SessionInput`s (`audio`, `dtmf`, `mark-played`, `interrupted`,
 * `hangup`, `io`, `tools`, `tool-result`) and returns `SessionOutput`s (see `output`).
 * @param {RealtimePluginSpec} spec
 * @returns {Declared<RealtimePluginSpec>}
 */
export function realtimePlugin(spec) {
  return declare('realtime', spec);
}

/**
 * Declares a speech-to-text stage (world `stt-plugin`, resource `recognizer`); default-export
 * the result. `handle` gets `SttInput`s — `audio` (20 ms of caller audio in `info.inputFormat`),
 * `end-of-turn` (the host's endpointing: answer with the turn's final `transcript`, then
 * `end-of-turn`, at once or when upstream I/O completes), `io`, `hangup` — and returns
 * `SttOutput`s (see `sttOutput`).
 * @param {SttPluginSpec} spec
 * @returns {Declared<SttPluginSpec>}
 */
export function sttPlugin(spec) {
  return declare('stt', spec);
}

/**
 * Declares a language-model stage (world `llm-plugin`, resource `conversation`); default-export
 * the result. `handle` gets `LlmInput`s — `reply` (the whole history, oldest first; abandons a
 * reply in progress), `cancel` (barge-in: no more deltas for the reply), `tools` (the agent's
 * tools, each list replacing the one before), `io`, `hangup` — and returns `LlmOutput`s (see
 * `llmOutput`): `text-delta`s, any `tool-call`s, then `done`.
 * @param {LlmPluginSpec} spec
 * @returns {Declared<LlmPluginSpec>}
 */
export function llmPlugin(spec) {
  return declare('llm', spec);
}

/**
 * Declares a text-to-speech stage (world `tts-plugin`, resource `synthesizer`); default-export
 * the result. `handle` gets `TtsInput`s — `text` (a sentence or clause of the reply, to speak
 * after what came before), `flush` (no more text for this utterance), `cancel` (barge-in: drop
 * everything not yet returned), `io`, `hangup` — and returns `TtsOutput`s (see `ttsOutput`):
 * `audio`, and `utterance-done` once everything before a `flush` has been returned.
 * @param {TtsPluginSpec} spec
 * @returns {Declared<TtsPluginSpec>}
 */
export function ttsPlugin(spec) {
  return declare('tts', spec);
}
