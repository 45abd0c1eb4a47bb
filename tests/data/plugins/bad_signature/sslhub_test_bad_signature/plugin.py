"""A plugin whose hook takes an argument the hook spec does not have.

Its other hook is valid on its own; a plugin that fails validation must not be half-loaded.
"""

from sslhub import Params, hookimpl


def _never_built(params, context):
    raise AssertionError("test component: never built")


@hookimpl
def sslhub_register_augmentations(registry):
    registry.register("bad_signature_augmentation", _never_built, params=Params)


@hookimpl
def sslhub_register_objectives(registry, extra):  # "extra" is not in the spec
    registry.register("bad_signature_objective", _never_built, params=Params)
