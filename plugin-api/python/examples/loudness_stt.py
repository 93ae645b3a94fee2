"""A speech-to-text stage in a dozen lines (the README's example): hears "loud" for each run of
loud caller audio and answers the host's end of turn with what it heard.

Build: ``plugin-api/python/build.sh plugin-api/python/examples OUT.wasm --entry loudness_stt``
(world ``stt-plugin``, from the exported class). Setting: ``threshold`` (default 500), the RMS
level (PCM16 units) of a loud 20 ms frame.
"""

from typing import List

from switchboard_plugin import AudioFormat, AudioFrame, PluginInfo, Recognizer, SessionConfig, audio, export


@export(PluginInfo("loudness-stt", "0.1.0", "Hears 'loud' for each burst of sound", AudioFormat.pcm16(8000)))
class LoudnessStt(Recognizer):
    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self.threshold = config.settings().get("threshold", 500)
        self.words: List[str] = []
        self.speaking = False

    def on_audio(self, frame: AudioFrame) -> None:
        loud = audio.rms(audio.pcm16_from_bytes(frame.data)) >= self.threshold
        if loud and not self.speaking:
            self.speech_started()
            self.words.append("loud")
            self.transcript(" ".join(self.words), is_final=False)
        self.speaking = loud

    def on_end_of_turn(self) -> None:
        self.transcript(" ".join(self.words))
        self.end_of_turn()
        self.words.clear()
