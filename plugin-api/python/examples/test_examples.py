"""Tests of the SDK's pipeline stages and their test kit under plain CPython, through the stage
examples in this directory: ``python3 -m unittest`` here, with ``plugin-api/python`` on
``PYTHONPATH`` (the e2e suite runs it, and builds the examples into components)."""

import unittest
from typing import List

from switchboard_plugin import (
    AudioFormat,
    Conversation,
    Done,
    EndOfTurn,
    InvalidConfig,
    Internal,
    Message,
    PluginInfo,
    Recognizer,
    Role,
    Session,
    Speech,
    SpeechStarted,
    TextDelta,
    Transcript,
    UtteranceDone,
    audio,
    export,
)
from switchboard_plugin.session import exported
from switchboard_plugin.testing import ConversationHarness, RecognizerHarness, SynthesizerHarness

from beep_tts import Beeper
from loudness_stt import LoudnessStt
from parrot_llm import Parrot


def tone(level: int) -> bytes:
    return audio.pcm16_to_bytes((level if (i // 10) % 2 else -level) for i in range(160))


class RecognizerTest(unittest.TestCase):
    def test_audio_then_end_of_turn(self) -> None:
        h = RecognizerHarness(LoudnessStt)
        self.assertEqual(h.audio(tone(3000)), [SpeechStarted(), Transcript("loud", False)])
        self.assertEqual(h.silence(100), [])
        h.audio(tone(3000))
        out = h.end_of_turn()
        self.assertEqual(out, [Transcript("loud loud"), EndOfTurn()])
        self.assertEqual(RecognizerHarness.final_text(out), "loud loud")

    def test_the_default_end_of_turn_is_an_empty_turn(self) -> None:
        self.assertEqual(RecognizerHarness(Recognizer).end_of_turn(), [Transcript(""), EndOfTurn()])


class ConversationTest(unittest.TestCase):
    def test_reply_streams_deltas_then_done(self) -> None:
        h = ConversationHarness(Parrot)
        out = h.reply([Message(Role.SYSTEM, "Be brief."), Message(Role.USER, "see you soon")])
        self.assertEqual(out, [TextDelta("see"), TextDelta(" you"), TextDelta(" soon"), Done()])
        self.assertEqual(ConversationHarness.text(out), "see you soon")
        self.assertTrue(ConversationHarness.is_done(h.reply("hi")))

    def test_tools_are_kept(self) -> None:
        from switchboard_plugin import Tool

        h = ConversationHarness(Parrot)
        h.tools([Tool("t", "", "{}")])
        self.assertEqual([t.name for t in h.session.tools], ["t"])

    def test_a_bug_is_internal_and_emits_nothing(self) -> None:
        class Broken(Conversation):
            def on_reply(self, history: List[Message]) -> None:
                self.text_delta("half")
                raise KeyError("oops")

        with self.assertRaises(Internal) as caught:
            ConversationHarness(Broken).reply("hi")
        self.assertIn("KeyError", str(caught.exception))


class SynthesizerTest(unittest.TestCase):
    def test_text_flush_and_cancel(self) -> None:
        h = SynthesizerHarness(Beeper)
        self.assertEqual(h.text("Hi"), [])
        out = h.flush()
        self.assertIsInstance(out[0], Speech)
        self.assertEqual(out[0].frame.format, AudioFormat.pcm16(16000))
        self.assertEqual(out[-1], UtteranceDone())
        self.assertEqual(len(SynthesizerHarness.speech_bytes(out)), 2 * 2 * 160)
        h.text("dropped")
        h.cancel()
        self.assertEqual(SynthesizerHarness.speech_bytes(h.speak("a")), SynthesizerHarness.speech_bytes(h.speak("b")))


class ExportTest(unittest.TestCase):
    def test_each_class_names_its_world(self) -> None:
        info = PluginInfo("x", "0.1.0", "x", AudioFormat.pcm16(16000))
        for cls, world in [(Session, "realtime-plugin"), (LoudnessStt, "stt-plugin"), (Parrot, "llm-plugin"), (Beeper, "tts-plugin")]:
            export(info)(cls)
            self.assertEqual(exported()[1].WORLD, world)

    def test_only_plugin_classes_export(self) -> None:
        with self.assertRaises(TypeError):
            export(PluginInfo("x", "0.1.0", "x", AudioFormat.pcm16(16000)))(object)  # type: ignore[type-var]

    def test_bad_settings_refuse_the_stage(self) -> None:
        with self.assertRaises(InvalidConfig):
            ConversationHarness(Parrot, "[1]").session.config.settings()


if __name__ == "__main__":
    unittest.main()
