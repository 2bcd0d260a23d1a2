"""Named registries of interchangeable functions (advantages, loss normalisers, re-masking).

A registry maps a name to a function, and optionally the name the configuration uses (TRL's
vocabulary, e.g. ``scale_rewards="group"`` for the ``"zscore"`` advantages) to that name. The
configuration checks and the code that dispatches both read the registry, so adding a choice is
one function and one ``@REGISTRY.register("name")`` line::

    from maskgrpo.grpo import ADVANTAGES

    @ADVANTAGES.register("centred_max")
    def centred_max(rewards, eps):            # (groups, G) float64, NaN = unscorable
        centred = rewards - rewards.nanmean(dim=1, keepdim=True)
        return centred / (centred.abs().nan_to_num().amax(dim=1, keepdim=True) + eps)

    MaskGRPOConfig(scale_rewards="centred_max")   # now a valid choice
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable[..., object])


class Registry(Generic[F]):
    """Functions by name; ``kind`` names the choice in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._functions: dict[str, F] = {}
        self._config_names: dict[str, str] = {}  # configuration name -> registered name

    def register(self, name: str, *, config_name: str | None = None) -> Callable[[F], F]:
        """Decorator: register the function as ``name`` (and ``config_name`` in configs)."""
        alias = config_name or name

        def add(fn: F) -> F:
            taken = name in self._functions or alias in self._config_names
            if taken:
                raise ValueError(f"{self.kind} {name!r} is registered already; pick another name")
            self._functions[name] = fn
            self._config_names[alias] = name
            return fn

        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (and its configuration name)."""
        self._functions.pop(name)
        for alias in [a for a, n in self._config_names.items() if n == name]:
            del self._config_names[alias]

    def get(self, name: str) -> F:
        """The function registered as ``name``; a ValueError naming the choices otherwise."""
        if name not in self._functions:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._functions[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._functions)

    def config_names(self) -> tuple[str, ...]:
        """The names the configuration accepts, in registration order."""
        return tuple(self._config_names)

    def from_config(self, config_name: str) -> str:
        """The registered name of a configuration name."""
        if config_name not in self._config_names:
            raise ValueError(
                f"unknown {self.kind} {config_name!r}; choose one of {self.config_names()}"
            )
        return self._config_names[config_name]

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)
