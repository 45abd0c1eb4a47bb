"""Plugin settings that come from the environment, read without importing torch.

The catalog (which imports torch) and the file decoders (``sslhub.files``, which must not)
both honour them, so both read them here.
"""

from __future__ import annotations

import os

#: The entry-point group plugins are registered in.
ENTRY_POINT_GROUP = "sslhub"


def disabled_plugins() -> set[str]:
    """The names in ``SSLHUB_DISABLE_PLUGINS`` (comma-separated entry-point or distribution names)."""
    return {item.strip() for item in os.environ.get("SSLHUB_DISABLE_PLUGINS", "").split(",") if item.strip()}


def strict_from_env() -> bool:
    """Whether ``SSLHUB_STRICT_PLUGINS`` turns plugin problems into errors."""
    return os.environ.get("SSLHUB_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}
