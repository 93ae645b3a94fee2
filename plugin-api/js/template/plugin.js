// Echo, in JavaScript: the template for Switchboard plugins written in JS. Copy this directory,
// rename the plugin, replace the session logic; build with
//   node plugin-api/js/build.mjs template/plugin.js echo.wasm
// and test with `node --test template/` (see template/README.md).
//
// It does what the Rust echo (plugins/echo) does, frame for frame.
// Settings (the agent's `realtime.settings` in agents.toml, all optional):
// - `mode`: "utterance" (default) plays back each caller utterance once the caller pauses;
//   "immediate" returns every frame as soon as it arrives.
// - `silence_ms` (default 600): how long the caller must be quiet to end an utterance.
// - `threshold` (default 500): RMS level (PCM16 units) above which a 20 ms frame counts as speech.
// - `greeting_tone` (default false): play a 400 ms 440 Hz tone when the call starts.
// Anything else, or a wrong type, refuses the session with `invalid-config`.
// DTMF: `#` hangs up; any other key stops the reply that is playing (`clear-playback`).
import {
  realtimePlugin, parseSettings, PluginError, output, frame, pcm16, rms, durationMs, log,
} from '../index.js';

/** Every sample the plugin receives and plays is PCM16 at this rate (Hz). */
const SAMPLE_RATE = 8000;
/** Caller audio kept from before speech starts, so the first syllable is not clipped (ms). */
const PRE_ROLL_MS = 200;
/** Longest utterance kept before it is played back anyway (ms); bounds the session's memory. */
const MAX_UTTERANCE_MS = 30_000;
/** Length of the greeting tone (ms). */
const TONE_MS = 400;

const DEFAULTS = { mode: 'utterance', silence_ms: 600, threshold: 500, greeting_tone: false };

/** PCM16 bytes for `ms` milliseconds at SAMPLE_RATE. @param {number} ms */
const bytesForMs = (ms) => (SAMPLE_RATE / 1000) * ms * 2;

/**
 * One call's echo.
 * @param {typeof DEFAULTS} settings
 */
function echoSession(settings) {
  let greeted = false;
  /** PCM16 bytes of the utterance in progress (or the pre-roll while idle). */
  let buffer = new Uint8Array(0);
  let inSpeech = false;
  let silenceMs = 0;
  let trailingQuietBytes = 0;
  let utterances = 0;

  /** @param {Uint8Array} a @param {Uint8Array} b */
  const concat = (a, b) => {
    const out = new Uint8Array(a.length + b.length);
    out.set(a);
    out.set(b, a.length);
    return out;
  };

  /** Adds one frame of caller audio; when an utterance ends, queues it. @param {Uint8Array} pcm @param {any[]} out */
  function listen(pcm, out) {
    const loud = rms(pcm) >= settings.threshold;
    buffer = concat(buffer, pcm);
    if (!inSpeech) {
      if (loud) {
        inSpeech = true;
        silenceMs = 0;
        trailingQuietBytes = 0;
      } else if (buffer.length > bytesForMs(PRE_ROLL_MS)) {
        buffer = buffer.slice(buffer.length - bytesForMs(PRE_ROLL_MS));
      }
      return;
    }
    if (loud) {
      silenceMs = 0;
      trailingQuietBytes = 0;
    } else {
      silenceMs += Math.floor(durationMs(pcm, pcm16(SAMPLE_RATE)));
      trailingQuietBytes += pcm.length;
    }
    if (silenceMs >= settings.silence_ms || buffer.length >= bytesForMs(MAX_UTTERANCE_MS)) {
      const utterance = buffer.slice(0, buffer.length - trailingQuietBytes);
      buffer = new Uint8Array(0);
      inSpeech = false;
      utterances += 1;
      out.push(output.play(frame(utterance)));
      out.push(output.mark(`utterance-${utterances}`));
    }
  }

  return {
    /** @param {import('../index.js').SessionInput} input */
    handle(input) {
      const out = [];
      if (!greeted) {
        greeted = true;
        if (settings.greeting_tone) {
          out.push(output.play(frame(tone(TONE_MS, 440))));
          out.push(output.mark('greeting'));
        }
      }
      switch (input.tag) {
        case 'audio':
          if (settings.mode === 'immediate') out.push(output.play(frame(input.val.data)));
          else listen(input.val.data, out);
          break;
        case 'dtmf':
          out.push(input.val === '#' ? output.hangUp() : output.clearPlayback());
          break;
        case 'mark-played':
          log.debug(`caller heard up to mark ${input.val}`);
          break;
        default:
          break;
      }
      return out;
    },
  };
}

/** A sine tone at a quarter of full scale. @param {number} ms @param {number} hz */
function tone(ms, hz) {
  const n = (SAMPLE_RATE / 1000) * ms;
  const samples = new Int16Array(n);
  for (let i = 0; i < n; i++) samples[i] = Math.trunc(8192 * Math.sin((2 * Math.PI * hz * i) / SAMPLE_RATE));
  return samples;
}

export default realtimePlugin({
  info: {
    name: 'js-echo',
    version: '0.1.0',
    description: "Plays the caller's speech back (JavaScript template)",
    // PCM16 so the plugin can measure loudness; the host decodes the caller's μ-law for us.
    inputFormat: pcm16(SAMPLE_RATE),
  },
  open(config) {
    const settings = parseSettings(config.settings, DEFAULTS, 'js-echo');
    if (settings.mode !== 'utterance' && settings.mode !== 'immediate') {
      throw PluginError.invalidConfig(`js-echo settings: \`mode\` must be "utterance" or "immediate", not ${JSON.stringify(settings.mode)}`);
    }
    for (const key of /** @type {const} */ (['silence_ms', 'threshold'])) {
      if (!Number.isInteger(settings[key]) || settings[key] < 0) {
        throw PluginError.invalidConfig(`js-echo settings: \`${key}\` must be a whole number ≥ 0`);
      }
    }
    const format = config.inputFormat;
    if (format.encoding !== 'pcm16' || format.sampleRate !== SAMPLE_RATE) {
      throw PluginError.unsupported(`js-echo needs PCM16 at ${SAMPLE_RATE} Hz`);
    }
    log.info(`js-echo session open, mode ${settings.mode}`);
    return echoSession(settings);
  },
});
