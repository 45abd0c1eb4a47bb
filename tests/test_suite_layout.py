"""The test suite's own layout: pytest imports test files by basename (rootdir-relative, no
packages), so two test files of one name in different folders make one of them fail to
collect ("import file mismatch")."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_file_has_a_basename_of_its_own():
    folders: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if "data" not in path.relative_to(TESTS).parts:  # tests/data holds plugins under test, not tests
            folders[path.name].append(str(path.parent.relative_to(TESTS)))
    clashes = {name: places for name, places in folders.items() if len(places) > 1}
    assert not clashes, f"rename one of each: {clashes}"
