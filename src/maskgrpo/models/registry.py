"""The known model families, detection from a config, and lookup by name.

``family="auto"`` (every command's default) picks the family from ``config.json``: its
``model_type``, ``architectures`` and the classes named in ``auto_map``; a model of no known
family is ``generic``. Naming a family overrides detection (e.g. a fine-tune whose config was
rewritten under a new ``model_type``).
"""

from __future__ import annotations

from typing import Any

from .dream_family import DreamFamily
from .family import Family, GenericFamily, ModuleFamily
from .llada_family import LLaDAFamily, MMaDAFamily

__all__ = ["FAMILIES", "FAMILY_NAMES", "detect_family", "family_named"]

# Order matters for detection: MMaDA before LLaDA (MMaDA's model class subclasses LLaDA's).
FAMILIES: dict[str, Family] = {
    f.name: f for f in (MMaDAFamily(), DreamFamily(), LLaDAFamily(), GenericFamily())
}
TINY = ModuleFamily()
FAMILY_NAMES: tuple[str, ...] = ("auto", *FAMILIES)


def family_named(name: str) -> Family:
    """The family called ``name``; raises ``ValueError`` listing the choices."""
    if name not in FAMILIES:
        raise ValueError(f"family={name!r} is unknown; choose one of {list(FAMILY_NAMES)}")
    return FAMILIES[name]


def detect_family(config: dict[str, Any], override: str = "auto") -> Family:
    """The family of a ``config.json`` dict, or ``override`` when it is not ``auto``."""
    if override != "auto":
        return family_named(override)
    for family in FAMILIES.values():
        if family.matches(config):
            return family
    return FAMILIES["generic"]
