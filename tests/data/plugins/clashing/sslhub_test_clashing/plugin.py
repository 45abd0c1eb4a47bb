"""A plugin registering an objective name that sslhub-test-good already registers."""

from sslhub import Params, hookimpl


def _never_built(params, context):
    raise AssertionError("test component: never built")


@hookimpl
def sslhub_register_objectives(registry):
    registry.register("good_objective", _never_built, params=Params)
