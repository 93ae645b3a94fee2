// The test kit for JavaScript plugins: runs a plugin module in Node (no gateway, no WASM) against
// fake host functions that record every call, as plugin-api/src/testing.rs does for Rust.
//
//   import { Harness } from '../testing.js';           // or '<path to plugin-api/js>/testing.js'
//   import plugin from './plugin.js';
//   const h = Harness.open(plugin, { settings: { mode: 'immediate' } });
//   const out = h.audio(bytes);                          // the outputs of one input
//
// Run tests with `node --test <dir>` (Node's built-in runner; nothing to install).
import { bindHost, pcm16, pcm16ToBytes, PluginError } from './index.js';

/**
 * @typedef {import('./index.js').SessionInput} SessionInput
 * @typedef {import('./index.js').SessionOutput} SessionOutput
 * @typedef {import('./index.js').SessionConfig} SessionConfig
 * @typedef {import('./index.js').AudioFormat} AudioFormat
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
  }

  /** @returns {import('./index.js').HostFunctions} */
  functions() {
    const io = (/** @type {string} */ fn, /** @type {unknown[]} */ args, /** @type {boolean} */ returnsHandle) => {
      this.calls.push({ fn, args });
      if (this.refuse) {
        const payload = this.refuse;
        this.refuse = null;
        throw Object.assign(new Error(`${payload.tag}: ${payload.val}`), { payload });
      }
      return returnsHandle ? this.nextHandle++ : undefined;
    };
    return /** @type {any} */ ({
      log: (/** @type {string} */ level, /** @type {string} */ message) => {
        this.logs.push({ level, message });
      },
      nowMs: () => BigInt(this.now),
      secret: (/** @type {string} */ name) => {
        this.calls.push({ fn: 'secret', args: [name] });
        return this.secrets[name];
      },
      wsConnect: (/** @type {unknown[]} */ ...args) => io('wsConnect', args, true),
      wsSend: (/** @type {unknown[]} */ ...args) => io('wsSend', args, false),
      wsClose: (/** @type {unknown[]} */ ...args) => io('wsClose', args, false),
      httpSend: (/** @type {unknown[]} */ ...args) => io('httpSend', args, true),
      setTimer: (/** @type {unknown[]} */ ...args) => io('setTimer', args, true),
      cancel: (/** @type {unknown[]} */ ...args) => {
        this.calls.push({ fn: 'cancel', args });
      },
    });
  }

  /** The calls so far, then forgets them. */
  takeCalls() {
    const calls = this.calls;
    this.calls = [];
    return calls;
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
 * One session of a plugin, driven input by input. The plugin's errors come back as thrown
 * `PluginError`s (kind in `.payload.tag`).
 */
export class Harness {
  /**
   * @param {{ info: import('./index.js').PluginInfo, open: (c: SessionConfig) => any }} plugin the module's default export
   * @param {Parameters<typeof configFor>[0] & { secrets?: Record<string, string> }} [opts]
   */
  static open(plugin, opts = {}) {
    const host = new FakeHost();
    Object.assign(host.secrets, opts.secrets ?? {});
    bindHost(host.functions());
    const config = configFor({ inputFormat: plugin.info.inputFormat, ...opts });
    return new Harness(plugin.open(config), host, config);
  }

  /** @param {any} session @param {FakeHost} host @param {SessionConfig} config */
  constructor(session, host, config) {
    this.session = session;
    this.host = host;
    this.config = config;
    this.timestampMs = 0;
  }

  /** Feeds one input; returns its outputs. @param {SessionInput} input @returns {SessionOutput[]} */
  send(input) {
    bindHost(this.host.functions());
    return this.session.handle(input) ?? [];
  }

  /** 20 ms (or any length) of caller audio in the session's input format. @param {Uint8Array | Int16Array} data */
  audio(data) {
    const bytes = data instanceof Int16Array ? pcm16ToBytes(data) : data;
    const input = { tag: 'audio', val: { format: this.config.inputFormat, data: bytes, timestampMs: BigInt(this.timestampMs) } };
    this.timestampMs += 20;
    return this.send(/** @type {SessionInput} */ (input));
  }

  /**
   * PCM16 samples as 20 ms frames; returns all their outputs.
   * @param {Int16Array} samples at the input format's rate
   */
  speak(samples) {
    const per = (this.config.inputFormat.sampleRate / 1000) * 20;
    const out = [];
    for (let i = 0; i < samples.length; i += per) out.push(...this.audio(samples.slice(i, i + per)));
    return out;
  }

  /** `ms` of silence as 20 ms frames. @param {number} ms */
  silence(ms) {
    return this.speak(new Int16Array((this.config.inputFormat.sampleRate / 1000) * ms));
  }

  /** A DTMF key. @param {string} digit */
  dtmf(digit) {
    return this.send({ tag: 'dtmf', val: digit });
  }

  /** A host I/O completion. @param {import('./index.js').IoEvent} event */
  io(event) {
    return this.send({ tag: 'io', val: event });
  }

  /** The call ends. */
  hangup() {
    return this.send({ tag: 'hangup' });
  }
}

/**
 * Calls `open` and returns the `PluginError` it threw (fails when it did not throw one).
 * @param {{ open: (c: SessionConfig) => any, info: any }} plugin
 * @param {Parameters<typeof configFor>[0]} opts
 * @returns {PluginError}
 */
export function openError(plugin, opts) {
  bindHost(new FakeHost().functions());
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
  const parts = outputs.flatMap((o) => (o.tag === 'play' ? [o.val.data] : []));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The names of `mark` outputs. @param {SessionOutput[]} outputs */
export function marks(outputs) {
  return outputs.flatMap((o) => (o.tag === 'mark' ? [o.val] : []));
}
