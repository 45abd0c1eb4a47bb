"""``python without_modules.py MOD1,MOD2 SSLHUB-ARGS...``: the sslhub command as if MOD1, MOD2 were not installed.

Tests use it to check what an install without a plugin's extra (``sslhub[audio]``...) does.
"""

import sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1].split(","))


class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None


sys.meta_path.insert(0, Blocker())
from sslhub.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
