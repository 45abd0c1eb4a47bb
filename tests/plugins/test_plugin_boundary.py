"""Built-in plugins stand alone: each imports only the public ``sslhub`` API, ``sslhub.testing``
and itself, never another plugin nor a private core module (pytest's model: ``-p no:vision``
really removes vision, and a third party can do whatever a built-in does).
"""

from __future__ import annotations

import ast
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
ALLOWED_CORE = {"sslhub", "sslhub.testing"}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports stay inside the plugin)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def boundary_violations() -> set[tuple[str, str]]:
    plugin_packages = {p.name for p in PLUGINS.iterdir() if (p / "__init__.py").is_file()}
    found = set()
    for package in sorted(plugin_packages):
        for path in sorted((PLUGINS / package).rglob("*.py")):
            for module in imported_modules(path):
                top = module.split(".")[0]
                crosses_plugins = top in plugin_packages and top != package
                private_core = top == "sslhub" and module not in ALLOWED_CORE
                if crosses_plugins or private_core:
                    found.add((str(path.relative_to(PLUGINS)), module))
    return found


def test_builtin_plugins_import_only_the_public_api():
    found = sorted(boundary_violations())
    assert not found, "built-in plugins may import only sslhub, sslhub.testing and themselves:\n" + "\n".join(
        f"  {path}: import {module}" for path, module in found
    )


def test_the_scan_sees_cross_plugin_and_private_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sslhub\nfrom sslhub.distributed import rank\nfrom sslhub_text import tokenizer\nfrom . import x\n"
    )
    assert imported_modules(sample) == {"sslhub", "sslhub.distributed", "sslhub_text"}
