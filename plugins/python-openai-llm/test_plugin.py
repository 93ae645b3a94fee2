"""Tests of the Python OpenAI LLM stage under plain CPython with the SDK's test kit (a fake
host: the HTTP request is recorded, its response fed back by hand as server-sent events):
``python3 -m unittest`` in this directory, with ``plugin-api/python`` on ``PYTHONPATH`` (the
e2e suite runs it)."""

import json
import unittest
from typing import Any, Dict, List

from switchboard_plugin import (
    Done,
    InvalidConfig,
    IoError,
    Message,
    RateLimited,
    Role,
    TextDelta,
    Tool,
    ToolCall,
    Unauthorized,
    Unsupported,
    Upstream,
)
from switchboard_plugin.testing import ConversationHarness

import plugin
import sse

BASE = "http://127.0.0.1:9/v1"


def chunk(content: str = "", finish: Any = None, **delta: Any) -> bytes:
    """One chat.completion.chunk as a server-sent event."""
    if content:
        delta["content"] = content
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def harness(settings: Dict[str, Any] = {}, key: str = "sk-test") -> ConversationHarness:
    return ConversationHarness(plugin.OpenAiLlm, {"base_url": BASE, **settings}, secrets={"api_key": key} if key else {})


def sent(h: ConversationHarness) -> Dict[str, Any]:
    """The one request the plugin sent since the last look: method, url, headers, JSON body."""
    (call,) = h.host.take("http_send")
    method, url, headers, body = call.args
    return {"method": method, "url": url, "headers": dict(headers), "json": json.loads(body)}


class ReplyTest(unittest.TestCase):
    def test_streams_deltas_then_done_with_the_bearer_token(self) -> None:
        h = harness({"model": "test-model", "temperature": 0.5, "max_tokens": 64})
        history = [Message(Role.SYSTEM, "Be brief."), Message(Role.USER, "Hi")]
        self.assertEqual(h.reply(history), [])
        request = sent(h)
        self.assertEqual(request["method"], "POST")
        self.assertEqual(request["url"], f"{BASE}/chat/completions")
        self.assertEqual(request["headers"]["Authorization"], "Bearer sk-test")
        self.assertEqual(request["headers"]["Accept"], "text/event-stream")
        self.assertEqual(
            request["json"],
            {
                "model": "test-model",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "stream": True,
                "temperature": 0.5,
                "max_tokens": 64,
            },
        )
        self.assertEqual(h.http_head(1, 200, [("content-type", "text/event-stream")]), [])
        self.assertEqual(h.http_chunk(1, chunk(role="assistant")), [])
        self.assertEqual(h.http_chunk(1, chunk("Sure") + chunk(", for")), [TextDelta("Sure"), TextDelta(", for")])
        self.assertEqual(h.http_chunk(1, chunk(" what time?", finish="stop") + DONE), [TextDelta(" what time?"), Done()])
        self.assertEqual(h.http_done(1), [], "nothing after done")

    def test_events_split_anywhere_still_stream(self) -> None:
        h = harness()
        h.reply("Hi")
        h.http_head(1, 200)
        stream = (chunk("Héllo") + chunk(" there") + DONE).replace(b"\n", b"\r\n")
        out: List[Any] = []
        for i in range(0, len(stream), 7):
            out += h.http_chunk(1, stream[i : i + 7])
        self.assertEqual(ConversationHarness.text(out), "Héllo there")
        self.assertTrue(ConversationHarness.is_done(out))

    def test_no_key_sends_no_authorization(self) -> None:
        h = harness(key="")
        h.reply("Hi")
        self.assertNotIn("Authorization", sent(h)["headers"])

    def test_a_finish_reason_without_done_completes_at_the_end_of_the_body(self) -> None:
        h = harness()
        h.reply("Hi")
        h.http_head(1, 200)
        self.assertEqual(h.http_chunk(1, chunk("Ok", finish="stop")), [TextDelta("Ok")])
        self.assertEqual(h.http_done(1), [Done()])

    def test_cancel_cancels_the_request_and_drops_late_events(self) -> None:
        h = harness()
        h.reply("Hi")
        h.http_head(1, 200)
        self.assertEqual(h.http_chunk(1, chunk("Sure")), [TextDelta("Sure")])
        h.host.take()
        self.assertEqual(h.cancel(), [])
        self.assertEqual([(c.name, c.args) for c in h.host.take()], [("cancel", (1,))])
        self.assertEqual(h.http_chunk(1, chunk(" late") + DONE), [], "no more deltas for it")
        self.assertEqual(h.http_done(1), [])

    def test_a_new_reply_abandons_the_one_in_progress(self) -> None:
        h = harness()
        h.reply("First")
        h.http_head(1, 200)
        h.host.take()
        h.reply("Second")
        calls = h.host.take()
        self.assertEqual([c.name for c in calls], ["cancel", "http_send"])
        self.assertEqual(calls[0].args, (1,))
        self.assertEqual(h.http_chunk(1, chunk("old") + DONE), [])
        h.http_head(2, 200)
        self.assertEqual(h.http_chunk(2, chunk("new") + DONE), [TextDelta("new"), Done()])

    def test_hangup_cancels(self) -> None:
        h = harness()
        h.reply("Hi")
        h.host.take()
        h.hang_up()
        self.assertEqual([c.name for c in h.host.take()], ["cancel"])


class ToolTest(unittest.TestCase):
    WEATHER = Tool("weather", "The weather in a city", '{"type": "object", "properties": {"city": {"type": "string"}}}')

    def test_tools_are_offered_and_streamed_calls_assembled(self) -> None:
        h = harness()
        h.tools([self.WEATHER])
        h.reply("Weather in Paris?")
        body = sent(h)["json"]
        self.assertEqual(body["tools"][0]["function"]["name"], "weather")
        self.assertEqual(body["tools"][0]["function"]["parameters"]["type"], "object")
        self.assertEqual((body["tool_choice"], body["parallel_tool_calls"]), ("auto", True))
        h.http_head(1, 200)
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"ci'}}
        rest = {"index": 0, "function": {"arguments": 'ty": "Paris"}'}}
        self.assertEqual(h.http_chunk(1, chunk(tool_calls=[first])), [])
        self.assertEqual(h.http_chunk(1, chunk(tool_calls=[rest])), [])
        out = h.http_chunk(1, chunk(finish="tool_calls") + DONE)
        self.assertEqual(out, [ToolCall("call_1", "weather", '{"city": "Paris"}'), Done()])

    def test_continuation_history_maps_to_the_api(self) -> None:
        h = harness()
        history = [
            Message(Role.USER, "Weather?"),
            Message(Role.ASSISTANT, "", [ToolCall("call_1", "weather", '{"city": "Paris"}')]),
            Message(Role.TOOL, '{"sky": "clear"}', tool_call_id="call_1"),
        ]
        h.reply(history)
        messages = sent(h)["json"]["messages"]
        self.assertEqual(messages[1]["content"], None)
        self.assertEqual(messages[1]["tool_calls"][0]["function"]["arguments"], '{"city": "Paris"}')
        self.assertEqual(messages[2], {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'})
        with self.assertRaises(Unsupported):
            h.reply([Message(Role.TOOL, "{}")])

    def test_bad_tool_schema_is_invalid_config(self) -> None:
        with self.assertRaises(InvalidConfig):
            harness().tools([Tool("x", "", "[1]")])


class FailureTest(unittest.TestCase):
    def failing(self, status: int, body: bytes, headers: Any = None) -> Exception:
        h = harness()
        h.reply("Hi")
        h.http_head(1, status, headers or [])
        h.http_chunk(1, body)
        with self.assertRaises(Exception) as caught:
            h.http_done(1)
        return caught.exception

    def test_statuses_map_to_plugin_errors(self) -> None:
        error = self.failing(401, b'{"error": {"message": "Incorrect API key provided"}}')
        self.assertIsInstance(error, Unauthorized)
        self.assertIn("Incorrect API key provided", str(error))
        error = self.failing(429, b"{}", [("Retry-After", "1.2")])
        self.assertIsInstance(error, RateLimited)
        self.assertEqual(error.retry_after, 2)
        error = self.failing(500, b"<html>oops</html>")
        self.assertIsInstance(error, Upstream)
        self.assertIn("HTTP 500: <html>oops</html>", str(error))

    def test_cut_streams_errors_and_garbage_are_upstream(self) -> None:
        for body, why in [
            (chunk("Sure"), "before data: [DONE]"),
            (b'data: {"error": {"message": "overloaded"}}\n\n', "overloaded"),
            (b"data: not json\n\n", "not JSON"),
        ]:
            with self.subTest(why=why):
                h = harness()
                h.reply("Hi")
                h.http_head(1, 200)
                with self.assertRaises(Upstream) as caught:
                    h.http_chunk(1, body)
                    h.http_done(1)
                self.assertIn(why, str(caught.exception))

    def test_io_failure_is_upstream(self) -> None:
        h = harness()
        h.reply("Hi")
        with self.assertRaises(Upstream):
            h.io_failed(1, "connection refused")
        self.assertEqual(h.io_failed(1, "again"), [], "the failed reply is gone")

    def test_denied_host_is_invalid_config(self) -> None:
        h = harness()
        h.host.refuse["http_send"] = IoError("denied", "127.0.0.1 is not in allowed_hosts")
        with self.assertRaises(InvalidConfig) as caught:
            h.reply("Hi")
        self.assertIn("allowed_hosts", str(caught.exception))


class SettingsTest(unittest.TestCase):
    def test_defaults(self) -> None:
        h = ConversationHarness(plugin.OpenAiLlm)
        h.reply("Hi")
        request = sent(h)
        self.assertEqual(request["url"], "https://api.openai.com/v1/chat/completions")
        self.assertEqual(request["json"]["model"], "gpt-4o-mini")
        self.assertNotIn("temperature", request["json"])

    def test_bad_settings_are_invalid_config(self) -> None:
        for settings in (
            {"model": ""},
            {"model": 3},
            {"base_url": "ftp://x"},
            {"temperature": 3},
            {"temperature": True},
            {"max_tokens": 0},
            {"colour": "red"},
        ):
            with self.subTest(settings=settings), self.assertRaises(InvalidConfig):
                harness(settings)


class SseTest(unittest.TestCase):
    def test_line_ends_fields_and_comments(self) -> None:
        p = sse.Parser()
        self.assertEqual(p.feed(b": comment\r"), [])
        self.assertEqual(p.feed(b"\nevent: error\rdata: a\r\ndata:b\n\n"), [sse.Event("error", "a\nb")])
        self.assertEqual(p.feed(b"data: tail"), [])
        self.assertEqual(p.finish(), [sse.Event("message", "tail")])

    def test_overlong_lines_are_refused(self) -> None:
        with self.assertRaises(sse.SseError):
            sse.Parser().feed(b"x" * (sse.MAX_LINE_BYTES + 1))


if __name__ == "__main__":
    unittest.main()
