"""Component glue (build time only) of the ``realtime-plugin`` world: the ``realtime``
interface's free functions (:class:`Realtime`) and its ``session`` resource (:class:`Session`)
over the plugin's :class:`switchboard_plugin.Session` subclass. See
:mod:`switchboard_plugin._component`.
"""

from __future__ import annotations

from typing import Any, List

from wit_world import exports as _exports  # type: ignore[import-not-found]
from wit_world.exports import realtime as _rt  # type: ignore[import-not-found]
from wit_world.imports import tools as _tools  # type: ignore[import-not-found]
from wit_world.imports import types as _t  # type: ignore[import-not-found]

from . import types as sb
from ._component import ResourceGlue, dispatch_io, frame_from_wit, frame_to_wit, info_to_wit
from .session import drive


class Realtime(_exports.Realtime):
    """The ``realtime`` interface's free functions."""

    def describe(self) -> _t.PluginInfo:
        return info_to_wit()


class Session(ResourceGlue, _rt.Session):
    """The ``realtime.session`` resource: one SDK session per call."""

    WORLD = "realtime-plugin"

    @staticmethod
    def dispatch(s: Any, input: "_rt.SessionInput") -> List[sb.Output]:
        if isinstance(input, _rt.SessionInput_Audio):
            return drive(s, s.on_audio, frame_from_wit(input.value))
        if isinstance(input, _rt.SessionInput_Dtmf):
            return drive(s, s.on_dtmf, input.value)
        if isinstance(input, _rt.SessionInput_MarkPlayed):
            return drive(s, s.on_mark_played, input.value)
        if isinstance(input, _rt.SessionInput_Interrupted):
            return drive(s, s.on_interrupted, input.value)
        if isinstance(input, _rt.SessionInput_Hangup):
            return drive(s, s.on_hangup)
        if isinstance(input, _rt.SessionInput_Tools):
            tools = [sb.Tool(t.name, t.description, t.parameters) for t in input.value]
            return drive(s, s.on_tools, tools)
        if isinstance(input, _rt.SessionInput_ToolResult):
            r = input.value
            if isinstance(r.outcome, _tools.ToolOutcome_Output):
                result = sb.ToolResult(r.id, output=r.outcome.value)
            else:
                result = sb.ToolResult(r.id, error=r.outcome.value)
            return drive(s, s.on_tool_result, result)
        if isinstance(input, _rt.SessionInput_Io):
            return dispatch_io(s, input.value)
        return []

    @staticmethod
    def output_to_wit(o: sb.Output) -> "_rt.SessionOutput":
        if isinstance(o, sb.Play):
            return _rt.SessionOutput_Play(frame_to_wit(o.frame))
        if isinstance(o, sb.ClearPlayback):
            return _rt.SessionOutput_ClearPlayback()
        if isinstance(o, sb.Mark):
            return _rt.SessionOutput_Mark(o.name)
        if isinstance(o, sb.UserTranscript):
            return _rt.SessionOutput_UserTranscript(_rt.Transcript(o.text, o.is_final))
        if isinstance(o, sb.AgentTranscript):
            return _rt.SessionOutput_AgentTranscript(_rt.Transcript(o.text, o.is_final))
        if isinstance(o, sb.Transfer):
            return _rt.SessionOutput_Transfer(o.number)
        if isinstance(o, sb.HangUp):
            return _rt.SessionOutput_HangUp()
        if isinstance(o, sb.ToolCall):
            return _rt.SessionOutput_ToolCall(_tools.ToolCall(o.id, o.name, o.arguments))
        raise sb.Internal(f"not a realtime session output: {o!r}")
