// A JavaScript plugin that misbehaves on purpose, for the containment tests
// (tests/e2e/js_plugins.rs): it echoes (immediate) until it has had `after_frames` frames of caller
// audio or a DTMF key, then does what `behaviour` says:
// - "spin": loops forever inside `handle` (the host's time budget must stop it);
// - "hog": allocates until the host's memory limit stops it.
import { realtimePlugin, parseSettings, PluginError, output, frame, pcm16, log } from '../../../plugin-api/js/index.js';

/** Keeps what `hog` allocates reachable. @type {Uint8Array[]} */
const hoard = [];

function misbehave(/** @type {string} */ behaviour) {
  log.warn(`js-misbehave: ${behaviour}`);
  if (behaviour === 'spin') {
    // eslint-disable-next-line no-constant-condition
    for (let i = 0; ; i++) if (i < 0) break;
  }
  for (;;) {
    const chunk = new Uint8Array(1 << 20);
    chunk.fill(1);
    hoard.push(chunk);
  }
}

export default realtimePlugin({
  info: { name: 'js-misbehave', version: '0.1.0', description: 'Misbehaves on purpose (tests)', inputFormat: pcm16() },
  open(config) {
    const s = parseSettings(config.settings, { behaviour: 'spin', after_frames: 25 }, 'js-misbehave');
    if (s.behaviour !== 'spin' && s.behaviour !== 'hog') {
      throw PluginError.invalidConfig('js-misbehave settings: `behaviour` must be "spin" or "hog"');
    }
    let frames = 0;
    return {
      handle(input) {
        if (input.tag === 'dtmf') misbehave(s.behaviour);
        if (input.tag !== 'audio') return [];
        frames += 1;
        if (frames > s.after_frames) misbehave(s.behaviour);
        return [output.play(frame(input.val.data))];
      },
    };
  },
});
