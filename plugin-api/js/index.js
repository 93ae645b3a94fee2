// Switchboard plugin SDK for JavaScript: thin, typed helpers over the plugin contract
// (plugin-api/wit/plugin.wit, package switchboard:plugin@0.2.0), mirroring the Rust SDK
// (plugin-api/src). Plain ES module with JSDoc types; the contract's own types are generated from
// the WIT into types/ (see gen-types.mjs).
//
// A plugin module default-exports `realtimePlugin({ info, open })`. `build.mjs` wraps it into the
// component's `realtime` export and binds the host functions; in Node (tests) `testing.js` binds
// fakes instead, so the same plugin code runs in both.
//
// Inputs and outputs are the contract's variants as componentize-js represents them:
// `{ tag: 'audio', val: AudioFrame }`, `{ tag: 'hangup' }`, … (types/interfaces/*.d.ts). Audio
// data is a `Uint8Array` of whole samples in the frame's `format`.

/// <reference path="./types/realtime-plugin.d.ts" />

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
 * A secret the agent grants this plugin (`realtime.secrets` in agents.toml), or undefined.
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
 * @typedef {object} Session One call's state.
 * @property {(input: SessionInput) => SessionOutput[] | void} handle Feeds one input; returns the
 *   outputs it caused (nothing = none). Throw `PluginError` to fail the call.
 */

/**
 * @typedef {object} RealtimePluginSpec
 * @property {PluginInfo} info what `describe` returns (name, version, description, input format)
 * @property {(config: SessionConfig) => Session} open starts a session for one call; throw
 *   `PluginError` (e.g. `invalidConfig`) to refuse it
 */

/**
 * Declares a realtime (speech-to-speech) plugin; default-export the result.
 * @param {RealtimePluginSpec} spec
 * @returns {RealtimePluginSpec & { exports: () => any }}
 */
export function realtimePlugin(spec) {
  return {
    ...spec,
    /** The component's `realtime` export (WIT interface `realtime`), for build.mjs's entry. */
    exports() {
      class Session {
        /** @param {Session} inner */
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
          return new Session(inner);
        }
        /** @param {SessionInput} input */
        handle(input) {
          try {
            return this.inner.handle(input) ?? [];
          } catch (e) {
            throw { payload: toPluginError(e) };
          }
        }
      }
      return { describe: () => spec.info, Session };
    },
  };
}
