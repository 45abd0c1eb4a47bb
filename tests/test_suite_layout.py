"""The test suite's own layout: pytest imports test files by basename (rootdir-relative, no
packages), so two test files of one name in different folders make one of them fail to
collect ("import file mismatch")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

TESTS = Path(__file__).resolve().parent


def test_every_test_file_has_a_basename_of_its_own():
    folders: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if "data" not in path.relative_to(TESTS).parts:  # tests/data holds plugins under test, not tests
            folders[path.name].append(str(path.parent.relative_to(TESTS)))
    clashes = {name: places for name, places in folders.items() if len(places) > 1}
    assert not clashes, f"rename one of each: {clashes}"


class _Item:
    """Stands in for a collected test: its module, name, ``slow`` mark and fixtures' scopes."""

    def __init__(self, name: str, slow: bool, module: str = "m", scopes: Sequence[str] = ()) -> None:
        self.name, self.slow, self.nodeid = name, slow, f"tests/test_{module}.py::{name}"
        self._fixtureinfo = SimpleNamespace(name2fixturedefs={"f": [SimpleNamespace(scope=s) for s in scopes]})

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "slow" and self.slow else None


def _ordered_names(slow: set[str], names: str, shares: int) -> list[str]:
    from suite_order import slow_first_in_each_share

    items = [_Item(name, name in slow) for name in names]
    return [item.name for item in slow_first_in_each_share(items, shares)]


def test_slow_tests_lead_each_share_a_worksteal_worker_starts_with():
    # 10 tests in 2 shares of 5 (worksteal's first hand-out): slow d, g, j dealt to the fronts in turn
    assert _ordered_names({"d", "g", "j"}, "abcdefghij", 2) == list("djabc" + "gefhi")
    # 11 tests in 3 shares of 3, 4 and 4; the other tests keep their order
    assert _ordered_names({"k"}, "abcdefghijk", 3) == list("kab" + "cdef" + "ghij")


def test_slow_tests_run_first_without_workers_and_fill_shares_they_outnumber():
    assert _ordered_names({"c", "e"}, "abcde", 1) == list("ceabd")
    # 3 slow tests, 2 shares of 1 and 2: the first share has room for one
    assert _ordered_names({"a", "b", "c"}, "abc", 2) == list("a" + "bc")


def test_a_slow_test_with_a_module_fixture_moves_with_its_whole_module():
    from suite_order import slow_first_in_each_share

    items = [_Item("a", False, "x"), _Item("b", False, "y", ["module"]), _Item("c", True, "y", ["module"])]
    items += [_Item("d", False, "y"), _Item("e", True, "z", ["session"]), _Item("f", False, "z")]
    ordered = [item.name for item in slow_first_in_each_share(items, 2)]
    # module y travels together (b, c, d), so its module fixture is built once; e moves alone
    assert ordered == list("bcd" + "eaf")
