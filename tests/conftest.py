"""Suite-wide setup: the folder of this file is on ``sys.path`` (pytest's default import mode
puts a rootless conftest's folder there), so test modules share helpers such as
``plugin_install`` by plain import."""

import pytest
from installation_check import builtin_plugin_import_errors
from suite_order import slow_first_in_each_share


def pytest_sessionstart(session: pytest.Session) -> None:
    # A broken install (say torchaudio built for another torch) would otherwise surface as a
    # collection error in some unrelated test; stop first, with the cause in one line each.
    problems = builtin_plugin_import_errors()
    if problems:
        pytest.exit("the installed environment is broken:\n" + "\n".join(problems), returncode=3)


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected: the shares are of what runs
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # The slow end-to-end tests would otherwise run where their folders sort (tests/recipes last),
    # so one worker ends on several minutes of them while the other waits.
    items[:] = slow_first_in_each_share(items, _initial_shares(config))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook, run in the controller for each worker
def pytest_configure_node(node) -> None:
    # xdist sets a worker's own --dist to "no": tell it the controller's, for _initial_shares
    node.workerinput["controller_dist"] = node.config.option.dist


def _initial_shares(config: pytest.Config) -> int:
    """How many contiguous shares pytest-xdist's worksteal scheduler cuts the collection into
    at the start (one per worker; 1 without it)."""
    workerinput = getattr(config, "workerinput", {})
    if workerinput.get("controller_dist") != "worksteal":
        return 1
    return int(workerinput["workercount"])
