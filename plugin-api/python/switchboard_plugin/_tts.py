"""Component glue (build time only) of the ``tts-plugin`` world: the ``tts`` interface's free
functions (:class:`Tts`) and its ``synthesizer`` resource (:class:`Synthesizer`) over the
plugin's :class:`switchboard_plugin.stages.Synthesizer` subclass. See
:mod:`switchboard_plugin._component`.
"""

from __future__ import annotations

from typing import Any, List

from wit_world import exports as _exports  # type: ignore[import-not-found]
from wit_world.exports import tts as _tts  # type: ignore[import-not-found]
from wit_world.imports import types as _t  # type: ignore[import-not-found]

from . import types as sb
from ._component import ResourceGlue, dispatch_io, frame_to_wit, info_to_wit
from .session import drive


class Tts(_exports.Tts):
    """The ``tts`` interface's free functions."""

    def describe(self) -> _t.PluginInfo:
        return info_to_wit()


class Synthesizer(ResourceGlue, _tts.Synthesizer):
    """The ``tts.synthesizer`` resource: one SDK synthesizer per call."""

    WORLD = "tts-plugin"

    @staticmethod
    def dispatch(s: Any, input: "_tts.TtsInput") -> List[sb.TtsOutput]:
        if isinstance(input, _tts.TtsInput_Text):
            return drive(s, s.on_text, input.value)
        if isinstance(input, _tts.TtsInput_Flush):
            return drive(s, s.on_flush)
        if isinstance(input, _tts.TtsInput_Cancel):
            return drive(s, s.on_cancel)
        if isinstance(input, _tts.TtsInput_Hangup):
            return drive(s, s.on_hangup)
        if isinstance(input, _tts.TtsInput_Io):
            return dispatch_io(s, input.value)
        return []

    @staticmethod
    def output_to_wit(o: sb.TtsOutput) -> "_tts.TtsOutput":
        if isinstance(o, sb.Speech):
            return _tts.TtsOutput_Audio(frame_to_wit(o.frame))
        if isinstance(o, sb.UtteranceDone):
            return _tts.TtsOutput_UtteranceDone()
        raise sb.Internal(f"not a synthesizer output: {o!r}")
