"""A plugin with a typo in a hook name: it must be reported, not silently ignored."""

from sslhub import Params, hookimpl


def _never_built(params, context):
    raise AssertionError("test component: never built")


@hookimpl
def sslhub_register_objectivs(registry):  # the typo under test: "objectivs"
    registry.register("misspelt_objective", _never_built, params=Params)
