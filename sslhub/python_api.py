"""Registration from plain Python code, without writing a plugin package.

``sslhub.objectives.register("name", params=MyParams)`` used as a decorator queues the
component; every :class:`sslhub.Catalog` created afterwards includes it, attributed to the
decorated function's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sslhub.registry import KINDS


@dataclass(frozen=True)
class PendingRegistration:
    kind: str
    name: str
    factory: Callable[..., Any]
    options: tuple[tuple[str, Any], ...]


class _Queue:
    """Registrations made through the decorator API, in order."""

    def __init__(self) -> None:
        self.items: list[PendingRegistration] = []


_QUEUE = _Queue()


class DecoratorRegistry:
    """``sslhub.<kind>s.register(name, **options)`` as a decorator."""

    def __init__(self, kind: str):
        assert kind in KINDS
        self.kind = kind

    def register(self, name: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            _QUEUE.items.append(PendingRegistration(self.kind, name, factory, tuple(options.items())))
            return factory

        return decorator

    def unregister(self, name: str) -> None:
        """Drop a queued registration (tests use this to stay independent)."""
        _QUEUE.items[:] = [p for p in _QUEUE.items if not (p.kind == self.kind and p.name == name)]


def pending_registrations() -> list[PendingRegistration]:
    return list(_QUEUE.items)


modalities = DecoratorRegistry("modality")
augmentations = DecoratorRegistry("augmentation")
encoders = DecoratorRegistry("encoder")
objectives = DecoratorRegistry("objective")
