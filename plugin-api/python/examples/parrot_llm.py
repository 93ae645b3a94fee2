"""A language-model stage in a few lines (the README's example): says the caller's last words
back, one word per text delta.

Build: ``plugin-api/python/build.sh plugin-api/python/examples OUT.wasm --entry parrot_llm``
(world ``llm-plugin``). ``plugins/python-openai-llm`` is the real thing.
"""

from typing import List

from switchboard_plugin import AudioFormat, Conversation, Message, PluginInfo, export


@export(PluginInfo("parrot-llm", "0.1.0", "Says the caller's words back", AudioFormat.pcm16(16000)))
class Parrot(Conversation):
    def on_reply(self, history: List[Message]) -> None:
        for i, word in enumerate(history[-1].content.split()):
            self.text_delta(word if i == 0 else " " + word)
        self.done()
