// A speech-to-text stage in JavaScript (`sttPlugin`), as small as one gets: it recognises nothing
// and reports every caller turn that had speech as the fixed `text` of its settings when the
// host's endpointing ends the turn (the JavaScript twin of tests/plugins/fixed-stt). A real
// recognizer streams the audio to a service through host I/O (`ws.connect`, `http.send`) and
// answers `end-of-turn` when the service's final text arrives.
//
// Settings: `text` (required), `threshold` (500: RMS in PCM16 units above which a frame is speech).
import { sttPlugin, sttOutput, parseSettings, PluginError, pcm16, rms } from '../index.js';

export default sttPlugin({
  info: {
    name: 'js-fixed-stt',
    version: '0.1.0',
    description: 'Reports every caller turn as a fixed text (JavaScript example)',
    inputFormat: pcm16(8000),
  },
  open(config) {
    const s = parseSettings(config.settings, { text: '', threshold: 500 }, 'js-fixed-stt');
    if (s.text === '') throw PluginError.invalidConfig('js-fixed-stt settings: `text` is required');
    let heard = false;
    return {
      handle(input) {
        switch (input.tag) {
          case 'audio':
            if (!heard && rms(input.val.data) >= s.threshold) {
              heard = true;
              return [sttOutput.speechStarted()];
            }
            return [];
          case 'end-of-turn': {
            const text = heard ? s.text : '';
            heard = false;
            return [sttOutput.transcript(text), sttOutput.endOfTurn()];
          }
          default:
            return [];
        }
      },
    };
  },
});
