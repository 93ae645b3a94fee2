"""The pipeline stages a plugin can implement instead of a realtime session: speech to text
(:class:`Recognizer`, world ``stt-plugin``), the language model (:class:`Conversation`, world
``llm-plugin``) and text to speech (:class:`Synthesizer`, world ``tts-plugin``).

Mirrors the Rust SDK's ``Stt``, ``Llm`` and ``Tts`` traits. The lifecycle and budgets are the
realtime session's (:mod:`switchboard_plugin.session`): the host reads the
:class:`~switchboard_plugin.types.PluginInfo` once, opens one instance per call (the class's
constructor), then feeds it one input at a time — a method call (``on_audio``, ``on_reply``,
``on_text``, …) — and gets back, in order, what the callback emitted with the helpers
(``transcript``, ``text_delta``, ``speech``, …). Host I/O completions arrive as the same
callbacks as a session's (``on_http_chunk``, ``on_ws_message``, ``on_timer``, …). Export the
subclass with :func:`switchboard_plugin.export`; the build picks the stage's world from it::

    from switchboard_plugin import AudioFormat, Message, PluginInfo, export
    from switchboard_plugin.stages import Conversation

    @export(PluginInfo("parrot-llm", "0.1.0", "Says the caller's words back", AudioFormat.pcm16(16000)))
    class Parrot(Conversation):
        def on_reply(self, history: list[Message]) -> None:
            self.text_delta(history[-1].content)
            self.done()

A stage's ``input_format`` in its ``PluginInfo`` matters only for a recognizer (the caller
audio it receives); the contract requires one from every plugin.
"""

from __future__ import annotations

from typing import List, Optional

from .session import SessionBase
from .types import (
    AudioFormat,
    AudioFrame,
    Done,
    EndOfTurn,
    LlmOutput,
    Message,
    SessionConfig,
    Speech,
    SpeechStarted,
    SttOutput,
    TextDelta,
    Tool,
    ToolCall,
    Transcript,
    TtsOutput,
    UtteranceDone,
)


class Recognizer(SessionBase):
    """Speech to text, the first stage of a pipeline agent: one per call, fed the caller's audio
    (WIT ``stt.recognizer``). The host runs its own VAD and endpointing; when it decides the
    turn is over it calls :meth:`on_end_of_turn`, which must be answered (at once, or when
    upstream I/O completes) with the turn's final :meth:`transcript` and :meth:`end_of_turn`.
    """

    WORLD = "stt-plugin"
    _outputs: List[SttOutput]

    # Outputs ---------------------------------------------------------------------------------

    def speech_started(self) -> None:
        """Speech began (optional: the host's VAD detects it too)."""
        self._outputs.append(SpeechStarted())

    def transcript(self, text: str, is_final: bool = True) -> None:
        """Text of the caller's current turn; ``is_final`` False for interim text."""
        self._outputs.append(Transcript(text, is_final))

    def end_of_turn(self) -> None:
        """The turn is over (after its final transcript)."""
        self._outputs.append(EndOfTurn())

    # Inputs (override) -----------------------------------------------------------------------

    def on_audio(self, frame: AudioFrame) -> None:
        """20 ms of caller audio, in the format ``describe`` asked for."""

    def on_end_of_turn(self) -> None:
        """The host's endpointing ended the caller's turn: finalise what you have and answer
        with the final :meth:`transcript` (empty when nothing was said), then
        :meth:`end_of_turn`. The default answers with an empty turn."""
        self.transcript("", True)
        self.end_of_turn()


class Conversation(SessionBase):
    """The language model of a pipeline agent: one per call (WIT ``llm.conversation``). The
    host keeps the history and asks for one reply at a time (:meth:`on_reply`), streamed back
    as :meth:`text_delta` calls and ended by :meth:`done`. A new ``on_reply`` abandons the reply
    in progress; :meth:`on_cancel` (the caller barged in) stops it: no more deltas for it.
    """

    WORLD = "llm-plugin"
    _outputs: List[LlmOutput]

    def __init__(self, config: SessionConfig) -> None:
        super().__init__(config)
        self.tools: List[Tool] = []
        """The agent's tools (the latest ``on_tools`` list), to offer the model with each reply."""

    # Outputs ---------------------------------------------------------------------------------

    def text_delta(self, text: str) -> None:
        """More text of the reply (empty text is dropped)."""
        if text:
            self._outputs.append(TextDelta(text))

    def done(self) -> None:
        """The reply is complete. After tool calls, the host runs them and asks for the
        continuation: an ``on_reply`` whose history ends with the assistant message (carrying
        the calls) and one ``tool`` message per result."""
        self._outputs.append(Done())

    def tool_call(self, id: str, name: str, arguments: str) -> None:
        """The reply calls a tool, whole (``arguments`` as JSON text, assembled by the plugin);
        emit before :meth:`done`."""
        self._outputs.append(ToolCall(id, name, arguments))

    # Inputs (override) -----------------------------------------------------------------------

    def on_reply(self, history: List[Message]) -> None:
        """Reply to this history (oldest first; the agent's instructions first, as ``system``)."""

    def on_cancel(self) -> None:
        """Stop the reply in progress (the caller barged in)."""

    def on_tools(self, tools: List[Tool]) -> None:
        """The agent's tools for every reply from now on (replacing the list before). The
        default keeps them in :attr:`tools`."""
        self.tools = list(tools)


class Synthesizer(SessionBase):
    """Text to speech, the last stage of a pipeline agent: one per call (WIT
    ``tts.synthesizer``). The host feeds the reply a sentence or clause at a time
    (:meth:`on_text`), then :meth:`on_flush`; answer with :meth:`speech` and, once everything
    before the flush has been returned, :meth:`utterance_done`.
    """

    WORLD = "tts-plugin"
    _outputs: List[TtsOutput]

    # Outputs ---------------------------------------------------------------------------------

    def speech(self, audio: "AudioFrame | bytes", format: Optional[AudioFormat] = None) -> None:
        """Audio of the utterance: a frame, or bytes in ``format`` (default: PCM16 at the rate of
        the plugin's ``input_format``). Any length; PCM16 at any rate or μ-law at 8 kHz."""
        if isinstance(audio, AudioFrame):
            frame = AudioFrame(audio.format, bytes(audio.data), 0)
        else:
            fmt = format or AudioFormat.pcm16(self.config.input_format.sample_rate)
            frame = AudioFrame(fmt, bytes(audio), 0)
        self._outputs.append(Speech(frame))

    def utterance_done(self) -> None:
        """Everything given before the last flush has been returned as audio."""
        self._outputs.append(UtteranceDone())

    # Inputs (override) -----------------------------------------------------------------------

    def on_text(self, text: str) -> None:
        """Speak this text after what was given before."""

    def on_flush(self) -> None:
        """No more text for this utterance: speak what is buffered."""

    def on_cancel(self) -> None:
        """Drop everything not yet returned (the caller barged in)."""
