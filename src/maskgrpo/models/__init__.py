"""Models: the built-in tiny bidirectional transformer (and loaders for hub models)."""

from .tiny import TinyConfig, TinyDiffusionLM

__all__ = ["TinyConfig", "TinyDiffusionLM"]
