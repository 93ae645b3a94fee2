"""Tests of the echo template under plain CPython: ``python3 -m unittest`` in this directory
(with ``plugin-api/python`` on ``PYTHONPATH``; the e2e suite runs it)."""

import unittest

from switchboard_plugin import ClearPlayback, HangUp, InvalidConfig, audio
from switchboard_plugin.testing import Harness

import plugin


def tone(level: int, ms: int = 20) -> bytes:
    """A square wave of PCM16 at 8 kHz, ``ms`` long."""
    return audio.pcm16_to_bytes((level if (i // 10) % 2 else -level) for i in range(8 * ms))


class EchoTest(unittest.TestCase):
    def test_immediate_plays_every_frame_back_unchanged(self) -> None:
        h = Harness(plugin.Echo, {"mode": "immediate"})
        for level in (100, 2000, 30000):
            self.assertEqual(Harness.played_bytes(h.audio(tone(level))), tone(level))

    def test_utterance_is_played_after_the_pause(self) -> None:
        h = Harness(plugin.Echo, {"silence_ms": 100})
        said = b"".join(tone(3000) for _ in range(10))
        for i in range(10):
            self.assertEqual(h.audio(said[i * 320 : (i + 1) * 320]), [], "nothing while speaking")
        out = h.silence(100)
        played = Harness.played_bytes(out)
        self.assertEqual(played[: len(said)], said)
        self.assertEqual(len(played), len(said) + 5 * 320, "the utterance and its 100 ms tail")

    def test_quiet_line_plays_nothing(self) -> None:
        h = Harness(plugin.Echo)
        self.assertEqual(h.silence(2000), [])

    def test_dtmf_clears_and_hash_hangs_up(self) -> None:
        h = Harness(plugin.Echo)
        self.assertEqual(h.dtmf("5"), [ClearPlayback()])
        self.assertEqual(h.dtmf("#"), [HangUp()])

    def test_bad_settings_are_invalid_config(self) -> None:
        for settings in ({"mode": "loud"}, {"silence_ms": -1}, {"silence_ms": "x"}, {"colour": 1}, "[1]"):
            with self.subTest(settings=settings), self.assertRaises(InvalidConfig):
                Harness(plugin.Echo, settings)

    def test_logs_through_the_host(self) -> None:
        h = Harness(plugin.Echo, {"mode": "immediate"})
        self.assertIn("echo-py session open, mode immediate", [m for _, m in h.host.logs])


class AudioTest(unittest.TestCase):
    def test_mulaw_matches_g711_reference_points(self) -> None:
        self.assertEqual(audio.mulaw_encode(0), 0xFF)
        self.assertEqual(audio.mulaw_encode(32767), 0x80)
        self.assertEqual(audio.mulaw_encode(-32768), 0x00)
        self.assertEqual(audio.mulaw_decode(0x80), 32124)
        self.assertEqual(audio.mulaw_decode(0x00), -32124)
        for byte in range(256):
            self.assertEqual(audio.mulaw_encode(audio.mulaw_decode(byte)), 0xFF if byte == 0x7F else byte)


if __name__ == "__main__":
    unittest.main()
