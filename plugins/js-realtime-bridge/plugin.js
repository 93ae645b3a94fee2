// js-realtime-bridge: a realtime plugin in JavaScript that bridges the call to a server speaking
// the OpenAI Realtime protocol (GA event names), entirely through host I/O — the JS counterpart
// of plugins/openai-realtime, kept small: it shows the host's WebSocket, timers and secrets at
// work from JS.
//
// - The API key is the agent's secret `api_key` (`realtime.secrets` in agents.toml); without it
//   the session is refused (`unauthorized`).
// - `open` connects to `<base_url>?model=<model>` with `Authorization: Bearer <key>` and queues a
//   `session.update` (μ-law at 8 kHz both ways, so caller audio is forwarded untouched) and, when
//   the agent has a greeting, a `response.create` that speaks it.
// - Caller audio frames go out as `input_audio_buffer.append`; the server's
//   `response.output_audio.delta`s are played; its `speech_started` clears playback (barge-in);
//   transcripts become the call's transcript.
// - Timers: the socket must open within `connect_timeout_ms`, or the call fails (`upstream`);
//   with `max_call_ms` > 0 the plugin says goodbye and hangs up after that long.
//
// Settings: `base_url` (required, ws:// or wss://; its host must be in `allowed_hosts`), `model`
// ("gpt-realtime"), `voice` ("marin"), `instructions` (""), `connect_timeout_ms` (5000),
// `max_call_ms` (0 = no limit).
import {
  realtimePlugin, parseSettings, PluginError, output, frame, mulaw, log, secret, ws, timers,
  toBase64, fromBase64,
} from '../../plugin-api/js/index.js';

const DEFAULTS = {
  base_url: '',
  model: 'gpt-realtime',
  voice: 'marin',
  instructions: '',
  connect_timeout_ms: 5000,
  max_call_ms: 0,
};

/** @param {string} text @returns {any} */
function parseEvent(text) {
  try {
    return JSON.parse(text);
  } catch {
    throw PluginError.upstream(`the server sent a message that is not JSON: ${text.slice(0, 80)}`);
  }
}

export default realtimePlugin({
  info: {
    name: 'js-realtime-bridge',
    version: '0.1.0',
    description: 'Bridges the call to an OpenAI Realtime server (JavaScript, host I/O)',
    inputFormat: mulaw(),
  },
  open(config) {
    const s = parseSettings(config.settings, DEFAULTS, 'js-realtime-bridge');
    if (!/^wss?:\/\//.test(s.base_url)) {
      throw PluginError.invalidConfig('js-realtime-bridge settings: `base_url` must be a ws:// or wss:// URL');
    }
    for (const key of /** @type {const} */ (['connect_timeout_ms', 'max_call_ms'])) {
      if (!Number.isInteger(s[key]) || s[key] < 0 || s[key] > 0xffffffff) {
        throw PluginError.invalidConfig(`js-realtime-bridge settings: \`${key}\` must be a whole number of milliseconds`);
      }
    }
    const key = secret('api_key');
    if (!key) throw PluginError.unauthorized('js-realtime-bridge needs the secret `api_key` (realtime.secrets)');

    const url = `${s.base_url}${s.base_url.includes('?') ? '&' : '?'}model=${encodeURIComponent(s.model)}`;
    /** @param {() => number} f */
    const orFail = (f, what) => {
      try {
        return f();
      } catch (e) {
        throw PluginError.upstream(`${what}: ${/** @type {Error} */ (e).message}`);
      }
    };
    const socket = orFail(() => ws.connect(url, { Authorization: `Bearer ${key}` }), `cannot connect to ${url}`);
    const send = (/** @type {object} */ event) => ws.send(socket, JSON.stringify(event));
    send({
      type: 'session.update',
      session: {
        type: 'realtime',
        instructions: s.instructions,
        audio: {
          input: { format: { type: 'audio/pcmu' }, turn_detection: { type: 'server_vad' } },
          output: { format: { type: 'audio/pcmu' }, voice: s.voice },
        },
      },
    });
    if (config.greeting) {
      send({ type: 'response.create', response: { instructions: `Say exactly: ${config.greeting}` } });
    }
    const connectTimer = orFail(() => timers.set(s.connect_timeout_ms), 'cannot set a timer');
    const endTimer = s.max_call_ms > 0 ? orFail(() => timers.set(s.max_call_ms), 'cannot set a timer') : null;
    let opened = false;
    let closed = false;
    log.info(`js-realtime-bridge connecting to ${url}`);

    /** One server event → outputs. @param {any} event @returns {any[]} */
    function serverEvent(event) {
      switch (event.type) {
        case 'response.output_audio.delta':
          return [output.play(frame(fromBase64(event.delta), mulaw()))];
        case 'input_audio_buffer.speech_started':
          return [output.clearPlayback()];
        case 'conversation.item.input_audio_transcription.completed':
          return [output.userTranscript(String(event.transcript ?? ''))];
        case 'response.output_audio_transcript.done':
          return [output.agentTranscript(String(event.transcript ?? ''))];
        case 'error':
          log.warn(`server error: ${JSON.stringify(event.error)}`);
          return [];
        default:
          return [];
      }
    }

    return {
      handle(input) {
        switch (input.tag) {
          case 'audio':
            send({ type: 'input_audio_buffer.append', audio: toBase64(input.val.data) });
            return [];
          case 'io': {
            const ev = input.val;
            switch (ev.tag) {
              case 'ws-opened':
                opened = true;
                timers.cancel(connectTimer);
                log.info('js-realtime-bridge connected');
                return [];
              case 'ws-message':
                if (ev.val.message.tag !== 'text') return [];
                return serverEvent(parseEvent(ev.val.message.val));
              case 'ws-closed':
                closed = true;
                throw PluginError.upstream(`the server closed the socket (${ev.val.code} ${ev.val.reason})`);
              case 'failed':
                throw PluginError.upstream(`the connection failed: ${ev.val.error}`);
              case 'timer':
                if (ev.val === connectTimer && !opened) {
                  throw PluginError.upstream(`no connection after ${s.connect_timeout_ms} ms`);
                }
                if (ev.val === endTimer) {
                  log.info(`js-realtime-bridge: ${s.max_call_ms} ms are up, hanging up`);
                  return [output.agentTranscript('Time is up, goodbye.'), output.hangUp()];
                }
                return [];
              default:
                return [];
            }
          }
          case 'dtmf':
            send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: `The caller pressed ${input.val}.` }] } });
            return [];
          case 'hangup':
            if (!closed) ws.close(socket);
            return [];
          default:
            return [];
        }
      },
    };
  },
});
