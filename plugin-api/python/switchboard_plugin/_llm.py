"""Component glue (build time only) of the ``llm-plugin`` world: the ``llm`` interface's free
functions (:class:`Llm`) and its ``conversation`` resource (:class:`Conversation`) over the
plugin's :class:`switchboard_plugin.stages.Conversation` subclass. See
:mod:`switchboard_plugin._component`.
"""

from __future__ import annotations

from typing import Any, List

from wit_world import exports as _exports  # type: ignore[import-not-found]
from wit_world.exports import llm as _llm  # type: ignore[import-not-found]
from wit_world.imports import tools as _tools  # type: ignore[import-not-found]
from wit_world.imports import types as _t  # type: ignore[import-not-found]

from . import types as sb
from ._component import ResourceGlue, dispatch_io, info_to_wit
from .session import drive

_ROLES = {
    _llm.Role.SYSTEM: sb.Role.SYSTEM,
    _llm.Role.USER: sb.Role.USER,
    _llm.Role.ASSISTANT: sb.Role.ASSISTANT,
    _llm.Role.TOOL: sb.Role.TOOL,
}


def _message(m: "_llm.Message") -> sb.Message:
    calls = [sb.ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls]
    return sb.Message(_ROLES[m.role], m.content, calls, m.tool_call_id)


class Llm(_exports.Llm):
    """The ``llm`` interface's free functions."""

    def describe(self) -> _t.PluginInfo:
        return info_to_wit()


class Conversation(ResourceGlue, _llm.Conversation):
    """The ``llm.conversation`` resource: one SDK conversation per call."""

    WORLD = "llm-plugin"

    @staticmethod
    def dispatch(s: Any, input: "_llm.LlmInput") -> List[sb.LlmOutput]:
        if isinstance(input, _llm.LlmInput_Reply):
            return drive(s, s.on_reply, [_message(m) for m in input.value])
        if isinstance(input, _llm.LlmInput_Cancel):
            return drive(s, s.on_cancel)
        if isinstance(input, _llm.LlmInput_Tools):
            tools = [sb.Tool(t.name, t.description, t.parameters) for t in input.value]
            return drive(s, s.on_tools, tools)
        if isinstance(input, _llm.LlmInput_Hangup):
            return drive(s, s.on_hangup)
        if isinstance(input, _llm.LlmInput_Io):
            return dispatch_io(s, input.value)
        return []

    @staticmethod
    def output_to_wit(o: sb.LlmOutput) -> "_llm.LlmOutput":
        if isinstance(o, sb.TextDelta):
            return _llm.LlmOutput_TextDelta(o.text)
        if isinstance(o, sb.Done):
            return _llm.LlmOutput_Done()
        if isinstance(o, sb.ToolCall):
            return _llm.LlmOutput_ToolCall(_tools.ToolCall(o.id, o.name, o.arguments))
        raise sb.Internal(f"not a conversation output: {o!r}")
