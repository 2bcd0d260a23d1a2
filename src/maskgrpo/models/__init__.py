"""Model adapters: the built-in tiny transformer, Hugging Face masked diffusion models (LLaDA,
Dream, MMaDA and generic masked LMs: :mod:`.hf`, :mod:`.calls`, :mod:`.registry`), aMUSEd
(:mod:`.amused`) and the MMaDA-style ``<eoi>`` wrapper for images (:mod:`.mmada_image`)."""

from .tiny import TinyConfig, TinyDiffusionLM

__all__ = ["TinyConfig", "TinyDiffusionLM"]
