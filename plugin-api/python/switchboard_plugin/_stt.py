"""Component glue (build time only) of the ``stt-plugin`` world: the ``stt`` interface's free
functions (:class:`Stt`) and its ``recognizer`` resource (:class:`Recognizer`) over the plugin's
:class:`switchboard_plugin.stages.Recognizer` subclass. See :mod:`switchboard_plugin._component`.
"""

from __future__ import annotations

from typing import Any, List

from wit_world import exports as _exports  # type: ignore[import-not-found]
from wit_world.exports import stt as _stt  # type: ignore[import-not-found]
from wit_world.imports import types as _t  # type: ignore[import-not-found]

from . import types as sb
from ._component import ResourceGlue, dispatch_io, frame_from_wit, info_to_wit
from .session import drive


class Stt(_exports.Stt):
    """The ``stt`` interface's free functions."""

    def describe(self) -> _t.PluginInfo:
        return info_to_wit()


class Recognizer(ResourceGlue, _stt.Recognizer):
    """The ``stt.recognizer`` resource: one SDK recognizer per call."""

    WORLD = "stt-plugin"

    @staticmethod
    def dispatch(s: Any, input: "_stt.SttInput") -> List[sb.SttOutput]:
        if isinstance(input, _stt.SttInput_Audio):
            return drive(s, s.on_audio, frame_from_wit(input.value))
        if isinstance(input, _stt.SttInput_EndOfTurn):
            return drive(s, s.on_end_of_turn)
        if isinstance(input, _stt.SttInput_Hangup):
            return drive(s, s.on_hangup)
        if isinstance(input, _stt.SttInput_Io):
            return dispatch_io(s, input.value)
        return []

    @staticmethod
    def output_to_wit(o: sb.SttOutput) -> "_stt.SttOutput":
        if isinstance(o, sb.SpeechStarted):
            return _stt.SttOutput_SpeechStarted()
        if isinstance(o, sb.Transcript):
            return _stt.SttOutput_Transcript(_stt.SttTranscript(o.text, o.is_final))
        if isinstance(o, sb.EndOfTurn):
            return _stt.SttOutput_EndOfTurn()
        raise sb.Internal(f"not a recognizer output: {o!r}")
