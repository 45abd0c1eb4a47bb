"""The order the suite's tests are handed to pytest-xdist's workers in (see ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

#: fixture scopes whose value one worker builds once for a run of neighbouring tests and
#: rebuilds when another module's test comes between (session values live the whole run)
SHARED_SCOPES = {"module", "class", "package"}


def _is_slow(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None


def _shares_fixtures(item: pytest.Item) -> bool:
    """Whether ``item`` uses a module-, class- or package-scoped fixture (pytest has no public
    way to ask; an item without the private attribute counts as sharing none)."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = getattr(info, "name2fixturedefs", {})
    return any(getattr(d, "scope", "function") in SHARED_SCOPES for ds in definitions.values() for d in ds)


def _module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def _slow_units(items: Sequence[pytest.Item]) -> list[list[pytest.Item]]:
    """The slow tests in collection order, each alone, or with its whole module when it uses a
    fixture shared across the module (moving it alone would make its worker build that twice)."""
    whole_modules = {_module_of(i) for i in items if _is_slow(i) and _shares_fixtures(i)}
    units: list[list[pytest.Item]] = []
    placed: set[str] = set()
    for item in items:
        module = _module_of(item)
        if module in whole_modules and module not in placed:
            placed.add(module)
            units.append([i for i in items if _module_of(i) == module])
        elif module not in whole_modules and _is_slow(item):
            units.append([item])
    return units


def slow_first_in_each_share(items: list[pytest.Item], shares: int) -> list[pytest.Item]:
    """Reorder ``items`` so that each of the ``shares`` contiguous parts a scheduler hands out
    first starts with its part of the ``slow``-marked tests.

    worksteal gives worker i the next ``remaining // (shares - i)`` tests and later lets an idle
    worker take the back half of a busy one's queue: with the slow tests dealt round-robin to
    the fronts of the parts, every worker starts on long runs and the tail left to balance is
    made of short tests. Each worker collects the same items and orders them the same way, as
    xdist requires; without xdist (``shares`` 1) the slow tests simply run first.
    """
    sizes: list[int] = []
    for share in range(shares):
        sizes.append((len(items) - sum(sizes)) // (shares - share))
    parts: list[list[pytest.Item]] = [[] for _ in sizes]
    units = _slow_units(items)
    moved = {id(item) for unit in units for item in unit}
    share = 0
    for unit in units:  # round-robin: each unit to the next part with room for it (if none has, to its turn)
        for _ in range(shares):
            if len(parts[share]) + len(unit) <= sizes[share]:
                break
            share = (share + 1) % shares
        parts[share] += unit
        share = (share + 1) % shares
    rest = [item for item in items if id(item) not in moved]
    for part, size in zip(parts, sizes, strict=True):
        fill = max(0, size - len(part))
        part += rest[:fill]
        rest = rest[fill:]
    return [item for part in parts for item in part] + rest
