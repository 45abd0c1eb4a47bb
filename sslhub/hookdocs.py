"""Render the hook reference (docs/hooks.md) from the docstrings in :mod:`sslhub.hookspecs`.

python -m sslhub.hookdocs > docs/hooks.md
"""

from __future__ import annotations

import inspect

from sslhub import hookspecs


def hook_functions() -> list:
    return [
        value
        for name, value in vars(hookspecs).items()
        if name.startswith("sslhub_") and callable(value) and hasattr(value, "sslhub_spec")
    ]


def render() -> str:
    lines = [
        "# Hook reference",
        "",
        "Generated from `sslhub/hookspecs.py` by `python -m sslhub.hookdocs`; a test fails if it is stale.",
        "",
        inspect.getdoc(hookspecs) or "",
        "",
    ]
    for function in hook_functions():
        signature = str(inspect.signature(function)).replace("'", "")
        lines += [f"## `{function.__name__}{signature}`", "", inspect.getdoc(function) or "", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
