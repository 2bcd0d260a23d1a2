"""Loading published remote code (LLaDA, Dream, MMaDA) on every supported ``transformers``.

The modeling files that ship with these checkpoints were written for ``transformers`` 4.3x-4.4x.
A fresh install resolves ``transformers`` 5, where none of them loads unchanged. This module is
the small compatibility layer that lets them load: it patches the *classes and modules that the
remote code defines*, in memory, after ``transformers`` has imported them and before the model
is built. The user's files (and the hub cache) are never edited. Each rule applies only where it
is needed and is a no-op otherwise; every rule is checked on the fixtures on both ends of the
supported range (``pyproject.toml``).

Rules (the release that needs each one):

1. ``post_init`` (5.x): a model class whose ``__init__`` never calls ``post_init()`` lacks the
   bookkeeping 5.x reads while loading (``all_tied_weights_keys``...; LLaDA, MMaDA). It is called
   once at the end of ``__init__``.
2. ``tie_weights(missing_keys=..., recompute_mapping=...)`` (5.x): an override without those
   arguments (LLaDA, MMaDA) gets a wrapper that drops them.
3. ``GenerationConfig.validate(...)`` (5.x passes ``strict=`` / ``user_set_attributes=``): a
   subclass whose ``validate`` takes neither (Dream's ``DreamGenerationConfig``) gets a wrapper
   that drops them, so Dream's generation config loads and saves.
4. ``ROPE_INIT_FUNCTIONS["default"]`` (5.x dropped the key): a remote module that looks it up
   (Dream) gets a module-local copy of the table with the standard inverse frequencies
   ``1 / theta^(2i/d)`` under ``"default"``; the ``transformers`` table itself is left alone.
5. Non-persistent rotary buffers (5.x): loading leaves buffers that are not in the checkpoint
   uninitialised and relies on the model's ``_init_weights`` to fill them; Dream's does not
   know its ``inv_freq``. After loading, they are recomputed (Dream's own
   ``reset_rope_parameters``, or ``rope_init_fn`` of any module that has ``inv_freq``).
6. ``config.use_cache`` (5.x keeps generation flags off the model config): the cache flag is
   set to ``False`` on the loaded config (masked diffusion re-reads the whole sequence).
7. ``dtype=`` (4.56 renamed ``torch_dtype``): the weights' dtype goes under the name the
   installed release accepts.
8. ``_tied_weights_keys`` as a list (4.x: output weights tied to the input embedding; 5.x wants
   ``{tied: source}``, and saving fails on a list; Dream): the list becomes that mapping, with
   the input embedding's weight as the source.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from types import ModuleType
from typing import Any

import torch
from torch import nn

__all__ = [
    "after_load",
    "dtype_kwargs",
    "load_remote_model",
    "patch_remote_class",
    "transformers_version",
]

log = logging.getLogger(__name__)


def transformers_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed ``transformers``."""
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": dtype}`` from 4.56 on, ``{"torch_dtype": dtype}`` before (rule 7)."""
    return {"dtype": dtype} if transformers_version() >= (4, 56) else {"torch_dtype": dtype}


def _accepts(fn: Any, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _ensure_post_init(cls: Any) -> None:
    """Rule 1: call ``post_init`` after an ``__init__`` that did not."""
    original = cls.__dict__["__init__"]
    if getattr(original, "_maskgrpo_post_init", False):
        return

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if type(self) is cls and not hasattr(self, "all_tied_weights_keys"):
            self.post_init()

    __init__._maskgrpo_post_init = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


def _relax_tie_weights(cls: type) -> None:
    """Rule 2: ``tie_weights`` that ignores the 5.x keyword arguments it does not take."""
    original = cls.__dict__.get("tie_weights")
    if original is None or _accepts(original, "missing_keys"):
        return

    @functools.wraps(original)
    def tie_weights(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self)

    cls.tie_weights = tie_weights  # type: ignore[attr-defined]


def _tied_keys_mapping(cls: Any) -> None:
    """Rule 8: a 4.x list of tied output weights -> 5.x's ``{tied: input embedding weight}``."""
    keys = cls.__dict__.get("_tied_weights_keys")
    if not isinstance(keys, list | tuple):
        return
    tied = list(keys)

    def mapping(self: Any) -> dict[str, str]:
        weight = self.get_input_embeddings().weight
        source = next(n for n, p in self.named_parameters() if p is weight)
        return {k: source for k in tied if k != source}

    cls._tied_weights_keys = property(mapping)


def _relax_generation_validate(module: ModuleType) -> None:
    """Rule 3: ``validate(**kwargs)`` on the module's ``GenerationConfig`` subclasses."""
    from transformers import GenerationConfig

    for obj in list(vars(module).values()):
        if not (isinstance(obj, type) and issubclass(obj, GenerationConfig)):
            continue
        original = obj.__dict__.get("validate")
        if original is None or _accepts(original, "strict"):
            continue

        @functools.wraps(original)
        def validate(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            known = {k: v for k, v in kwargs.items() if _accepts(_original, k)}
            return _original(self, *args, **known)

        obj.validate = validate  # type: ignore[method-assign]


def _default_rope(config: Any, device: Any = None, seq_len: Any = None, **_: Any) -> Any:
    """Standard RoPE inverse frequencies ``1 / theta^(2i/d)`` (``transformers`` 4.x "default")."""
    base = config.rope_theta
    head_dim = getattr(config, "head_dim", None)
    head_dim = head_dim or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * getattr(config, "partial_rotary_factor", 1.0))
    exponent = torch.arange(0, dim, 2, dtype=torch.int64).float().to(device) / dim
    return 1.0 / (base**exponent), 1.0


def _rope_default(module: ModuleType) -> None:
    """Rule 4: a module-local rotary table that knows ``"default"``."""
    table = getattr(module, "ROPE_INIT_FUNCTIONS", None)
    if isinstance(table, dict) and "default" not in table:
        module.ROPE_INIT_FUNCTIONS = {**table, "default": _default_rope}  # type: ignore[attr-defined]


def _remote_modules(cls: type) -> list[ModuleType]:
    """The module defining ``cls`` and the remote modules it was assembled from."""
    names = {cls.__module__} | {c.__module__ for c in cls.__mro__}
    package = cls.__module__.rpartition(".")[0]
    names |= {n for n in sys.modules if package and n.startswith(package + ".")}
    return [sys.modules[n] for n in sorted(names) if n.startswith("transformers_modules")]


def patch_remote_class(cls: type) -> None:
    """Apply rules 1-4 and 8 to a remote model class, its bases and their modules."""
    v5 = transformers_version() >= (5, 0)
    for klass in cls.__mro__:
        if not klass.__module__.startswith("transformers_modules"):
            continue
        if v5 and "__init__" in klass.__dict__:
            _ensure_post_init(klass)
        if v5:
            _relax_tie_weights(klass)
            _tied_keys_mapping(klass)
    for module in _remote_modules(cls):
        _relax_generation_validate(module)
        if v5:
            _rope_default(module)


def _reset_rotary(model: nn.Module) -> int:
    """Rule 5: recompute rotary inverse frequencies; returns how many modules were reset."""
    reset = getattr(model, "reset_rope_parameters", None)
    if callable(reset):
        reset()
        return 1
    count = 0
    for module in model.modules():
        init_fn = getattr(module, "rope_init_fn", None)
        buffer = getattr(module, "inv_freq", None)
        if callable(init_fn) and isinstance(buffer, torch.Tensor):
            kwargs = getattr(module, "rope_kwargs", {}) or {}
            inv_freq, scaling = init_fn(module.config, buffer.device, **kwargs)
            module.register_buffer("inv_freq", inv_freq.to(buffer.dtype), persistent=False)
            module.original_inv_freq = module.inv_freq
            module.attention_scaling = scaling
            count += 1
    return count


def after_load(model: nn.Module) -> None:
    """Rules 5 and 6 on a freshly loaded remote-code model."""
    if transformers_version() >= (5, 0) and _reset_rotary(model):
        log.debug("recomputed the rotary frequencies of %s", type(model).__name__)
    config = getattr(model, "config", None)
    if config is not None:
        config.use_cache = False


def load_remote_model(
    name: str, class_ref: str, auto_class: str, *, dtype: torch.dtype
) -> nn.Module:
    """Import ``class_ref`` (``"modeling_x.Class"``) of ``name``, patch it, load the weights.

    Like ``AutoModel.from_pretrained(name, trust_remote_code=True)``, including the registration
    that makes ``save_pretrained`` copy the code files next to the weights.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    cls: Any = get_class_from_dynamic_module(class_ref, name)
    patch_remote_class(cls)
    cls.register_for_auto_class(auto_class)
    config_class = getattr(cls, "config_class", None)
    if config_class is not None and config_class.__module__.startswith("transformers_modules"):
        config_class.register_for_auto_class()
    model = cls.from_pretrained(name, **dtype_kwargs(dtype))
    after_load(model)
    return model
