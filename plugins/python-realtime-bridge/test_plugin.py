"""Tests of the bridge under plain CPython with the SDK's fake host: ``python3 -m unittest``
in this directory (with ``plugin-api/python`` on ``PYTHONPATH``; the e2e suite runs it)."""

import base64
import json
import unittest

from switchboard_plugin import ClearPlayback, InvalidConfig, Play, Unauthorized, Upstream
from switchboard_plugin.testing import Harness

import plugin

SETTINGS = {"base_url": "ws://127.0.0.1:9/v1/realtime", "instructions": "Be brief.", "batch_ms": 100}


def sent(h: Harness) -> list:
    return [json.loads(c.args[1]) for c in h.host.take("ws_send")]


class BridgeTest(unittest.TestCase):
    def open(self, **kw) -> Harness:
        return Harness(plugin.Bridge, SETTINGS, secrets={"api_key": "sk-test"}, **kw)

    def test_connects_with_the_secret_and_sets_a_timer(self) -> None:
        h = self.open()
        calls = h.host.take()
        self.assertEqual(calls[0].name, "ws_connect")
        self.assertEqual(calls[0].args, ("ws://127.0.0.1:9/v1/realtime?model=gpt-realtime",
                                         [("Authorization", "Bearer sk-test")]))
        self.assertEqual((calls[1].name, calls[1].args), ("set_timer", (100,)))

    def test_without_the_secret_is_unauthorized(self) -> None:
        with self.assertRaises(Unauthorized):
            Harness(plugin.Bridge, SETTINGS)

    def test_bad_settings_are_invalid_config(self) -> None:
        for bad in ({"batch_ms": 5}, {"base_url": ""}, {"voice": "x"}):
            with self.subTest(bad=bad), self.assertRaises(InvalidConfig):
                Harness(plugin.Bridge, {**SETTINGS, **bad}, secrets={"api_key": "k"})

    def test_session_update_and_greeting_on_open(self) -> None:
        h = self.open(greeting="Hello there")
        h.host.take()
        h.ws_opened(1)
        update, create = sent(h)
        self.assertEqual(update["session"]["audio"]["input"]["format"]["type"], "audio/pcmu")
        self.assertEqual(update["session"]["instructions"], "Be brief.")
        self.assertIn("Hello there", create["response"]["instructions"])

    def test_audio_is_batched_on_the_timer(self) -> None:
        h = self.open()
        h.ws_opened(1)
        h.host.take()
        for i in range(5):
            h.audio(bytes([i]) * 160)
        self.assertEqual(sent(h), [], "nothing before the timer")
        h.timer(2)
        calls = h.host.take()
        (append,) = [json.loads(c.args[1]) for c in calls if c.name == "ws_send"]
        self.assertEqual(append["type"], "input_audio_buffer.append")
        self.assertEqual(base64.b64decode(append["audio"]), b"".join(bytes([i]) * 160 for i in range(5)))
        self.assertEqual([c.args for c in calls if c.name == "set_timer"], [(100,)], "the timer is re-armed")

    def test_plays_deltas_and_clears_on_barge_in(self) -> None:
        h = self.open()
        h.ws_opened(1)
        out = h.ws_message(1, {"type": "response.output_audio.delta", "item_id": "item_1",
                               "delta": base64.b64encode(b"\x10" * 800).decode()})
        self.assertEqual(Harness.played_bytes(out), b"\x10" * 800)
        self.assertIsInstance(out[0], Play)
        self.assertEqual(h.ws_message(1, {"type": "input_audio_buffer.speech_started"}), [ClearPlayback()])
        late = h.ws_message(1, {"type": "response.output_audio.delta", "item_id": "item_1", "delta": "EBAQ"})
        self.assertEqual(late, [], "late audio of the cut reply is dropped")
        h.host.take()
        h.interrupted(640)
        (truncate,) = sent(h)
        self.assertEqual((truncate["item_id"], truncate["audio_end_ms"]), ("item_1", 640))

    def test_upstream_close_ends_the_call_but_hangup_does_not(self) -> None:
        h = self.open()
        h.ws_opened(1)
        with self.assertRaises(Upstream):
            h.ws_closed(1, 1011, "server error")
        h2 = self.open()
        h2.ws_opened(1)
        h2.hang_up()
        self.assertEqual([c.name for c in h2.host.take()][-2:], ["cancel", "ws_close"])


if __name__ == "__main__":
    unittest.main()
