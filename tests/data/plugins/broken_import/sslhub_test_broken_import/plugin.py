"""A plugin whose import fails, as when a dependency is not installed."""

from sslhub_test_missing_dependency import something  # noqa: F401 - this import is the point: it fails

from sslhub import hookimpl


@hookimpl
def sslhub_register_objectives(registry):
    raise AssertionError("never reached: the module fails to import")
