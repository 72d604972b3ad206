"""Test helpers: a simulated OpenAI / Anthropic / Gemini upstream (see `simulator`)."""

from __future__ import annotations

from .simulator import RecordedRequest, SimulatedProvider

__all__ = ["RecordedRequest", "SimulatedProvider"]
