// A language-model stage in JavaScript (`llmPlugin`) with no model behind it: it repeats the
// caller's last turn back, one word per `text-delta`, then `done`. It shows the stage's contract;
// plugins/js-openai-llm streams a real model's reply through host I/O.
//
// Settings: `prefix` ("You said: ").
import { llmPlugin, llmOutput, parseSettings, pcm16 } from '../index.js';

export default llmPlugin({
  info: {
    name: 'js-parrot-llm',
    version: '0.1.0',
    description: "Repeats the caller's last turn (JavaScript example)",
    // Not used by a language model; the contract requires one.
    inputFormat: pcm16(16000),
  },
  open(config) {
    const s = parseSettings(config.settings, { prefix: 'You said: ' }, 'js-parrot-llm');
    return {
      handle(input) {
        if (input.tag !== 'reply') return []; // nothing in flight to cancel: each reply is whole
        const last = input.val.filter((m) => m.role === 'user').at(-1)?.content ?? '';
        const words = `${s.prefix}${last}`.split(/(?<= )/);
        return [...words.map((w) => llmOutput.textDelta(w)), llmOutput.done()];
      },
    };
  },
});
