"""Every hook is documented, and docs/hooks.md matches the hook specs."""

from pathlib import Path

from sslhub.catalog import HOOK_NAMES
from sslhub.hookdocs import hook_functions, render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"


def test_every_hook_has_a_full_docstring():
    functions = hook_functions()
    assert {f.__name__ for f in functions} == HOOK_NAMES
    for function in functions:
        doc = function.__doc__ or ""
        assert "Args:" in doc and "Example" in doc, f"{function.__name__} needs Args and an Example in its docstring"


def test_hook_reference_is_current():
    assert DOCS.read_text() == render(), "docs/hooks.md is stale: run python -m sslhub.hookdocs > docs/hooks.md"
