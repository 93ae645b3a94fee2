// A text-to-speech stage in JavaScript (`ttsPlugin`): it "speaks" a 440 Hz tone, `ms_per_char`
// milliseconds per character, as PCM16 at 8000 Hz (the JavaScript twin of tests/plugins/tone-tts).
// Text is buffered until `flush`, then returned as audio and `utterance-done`; `cancel` drops
// the buffer. A real synthesizer sends the text through host I/O and returns audio as it streams
// back, then `utterance-done`.
//
// Settings: `ms_per_char` (50).
import { ttsPlugin, ttsOutput, parseSettings, PluginError, frame, pcm16 } from '../index.js';

/** Sample rate of the tone (Hz). */
const RATE = 8000;

export default ttsPlugin({
  info: {
    name: 'js-tone-tts',
    version: '0.1.0',
    description: 'A tone as long as the text (JavaScript example)',
    inputFormat: pcm16(RATE),
  },
  open(config) {
    const s = parseSettings(config.settings, { ms_per_char: 50 }, 'js-tone-tts');
    if (!Number.isInteger(s.ms_per_char) || s.ms_per_char < 0 || s.ms_per_char > 1000) {
      throw PluginError.invalidConfig('js-tone-tts settings: `ms_per_char` must be a whole number in 0–1000');
    }
    let text = '';
    return {
      handle(input) {
        switch (input.tag) {
          case 'text':
            text += input.val;
            return [];
          case 'flush': {
            const n = Math.floor(([...text].length * s.ms_per_char * RATE) / 1000);
            text = '';
            const samples = new Int16Array(n);
            for (let i = 0; i < n; i++) samples[i] = Math.trunc(8000 * Math.sin((2 * Math.PI * 440 * i) / RATE));
            return [...(n > 0 ? [ttsOutput.audio(frame(samples, pcm16(RATE)))] : []), ttsOutput.utteranceDone()];
          }
          case 'cancel':
            text = '';
            return [];
          default:
            return [];
        }
      },
    };
  },
});
