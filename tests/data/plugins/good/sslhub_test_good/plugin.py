"""Hooks of the well-behaved test plugin."""

from sslhub import hookimpl
from sslhub_test_good.components import CosineAgreement, CosineParams, RandomScale, ScaleParams


@hookimpl
def sslhub_register_augmentations(registry):
    registry.register("good_scale", RandomScale, params=ScaleParams)


@hookimpl
def sslhub_register_objectives(registry):
    registry.register("good_objective", CosineAgreement, params=CosineParams)
