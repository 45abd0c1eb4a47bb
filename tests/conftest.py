"""Suite-wide setup: the folder of this file is on ``sys.path`` (pytest's default import mode
puts a rootless conftest's folder there), so test modules share helpers such as
``plugin_install`` by plain import."""

import pytest
from installation_check import builtin_plugin_import_errors


def pytest_sessionstart(session: pytest.Session) -> None:
    # A broken install (say torchaudio built for another torch) would otherwise surface as a
    # collection error in some unrelated test; stop first, with the cause in one line each.
    problems = builtin_plugin_import_errors()
    if problems:
        pytest.exit("the installed environment is broken:\n" + "\n".join(problems), returncode=3)
