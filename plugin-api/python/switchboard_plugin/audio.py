"""Audio helpers: ITU-T G.711 μ-law and PCM16 byte conversions, loudness.

The host converts caller audio to the format a plugin asks for, so most plugins never need
these. Mirrors the Rust SDK's ``audio.rs`` (same reference points), in plain Python.
"""

from __future__ import annotations

import math
import sys
from array import array
from typing import Iterable, List

_BIAS = 0x84
_CLIP = 32635


def mulaw_encode(sample: int) -> int:
    """Encodes one PCM16 sample (-32768..32767) as a G.711 μ-law byte."""
    sign = 0x80 if sample < 0 else 0
    value = min(-sample if sample < 0 else sample, _CLIP) + _BIAS
    segment = max(value >> 7, 1).bit_length() - 1
    mantissa = (value >> (segment + 3)) & 0x0F
    return ~(sign | (segment << 4) | mantissa) & 0xFF


def mulaw_decode(byte: int) -> int:
    """Decodes one G.711 μ-law byte to a PCM16 sample."""
    byte = ~byte & 0xFF
    segment = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << segment) - _BIAS
    return -magnitude if byte & 0x80 else magnitude


def pcm16_from_bytes(data: bytes) -> List[int]:
    """Little-endian PCM16 bytes as samples; a trailing odd byte is ignored."""
    samples = array("h")
    samples.frombytes(data[: len(data) - len(data) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tolist()


def pcm16_to_bytes(samples: Iterable[int]) -> bytes:
    """Samples as little-endian PCM16 bytes (the contract's ``pcm16`` encoding)."""
    out = array("h", samples)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def mulaw_to_pcm16(data: bytes) -> bytes:
    """μ-law bytes as PCM16 bytes (same rate)."""
    return pcm16_to_bytes(mulaw_decode(b) for b in data)


def pcm16_to_mulaw(data: bytes) -> bytes:
    """PCM16 bytes as μ-law bytes (same rate)."""
    return bytes(mulaw_encode(s) for s in pcm16_from_bytes(data))


def rms(samples: List[int]) -> float:
    """Root mean square of PCM16 samples (0 for none), in PCM16 units."""
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))
