"""``sslhub new-plugin``: write a plugin package to start from, installable and tested.

:func:`create_plugin` writes, for a plugin called ``NAME``::

    sslhub-NAME/                      (the directory given)
      pyproject.toml                  distribution sslhub-NAME, entry point NAME = "sslhub_NAME.plugin",
                                      the supported sslhub versions as the dependency specifier
      README.md
      .gitignore
      sslhub_NAME/__init__.py
      sslhub_NAME/plugin.py           the @hookimpl functions, registering the two components
      sslhub_NAME/augmentation.py     NAME_gaussian_noise: noise on every float tensor of a batch
      sslhub_NAME/loss.py             the objective's loss, usable alone
      sslhub_NAME/objective.py        NAME_agreement: two-view cosine agreement + variance hinge
      sslhub_NAME/callbacks.py        CsvLogger: a training-event callback writing NAME_log.csv
      recipes/NAME_digits.yaml        an example recipe (vision plugin's image modality, small_cnn)
      tests/test_NAME_plugin.py       tests with sslhub.testing; they pass right after creation

The example components work with any modality and any encoder (they read only float tensors
and pooled features), so the package is a starting point whatever the plugin is for.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from pathlib import Path
from string import Template

from sslhub.errors import SSLHubError

_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
MAX_NAME_LENGTH = 40


class ScaffoldError(SSLHubError, ValueError):
    """The plugin cannot be created as asked (bad name, directory in the way)."""


def validate_name(name: str) -> str:
    """Check that ``name`` can name a plugin, its package and its components.

    Raises:
        ScaffoldError: (a ValueError) saying what is wrong and what would do.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
        hint = f" such as '{suggestion}'" if suggestion and _NAME.fullmatch(suggestion) else ""
        raise ScaffoldError(
            f"plugin name {name!r} is not a snake_case identifier: use lowercase letters, digits and single "
            f"underscores, starting with a letter{hint}"
        )
    if keyword.iskeyword(name):
        raise ScaffoldError(f"plugin name {name!r} is a Python keyword; choose another name")
    if len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(f"plugin name {name!r} is longer than {MAX_NAME_LENGTH} characters")
    if name == "sslhub" or name.startswith("sslhub_"):
        raise ScaffoldError(
            f"plugin name {name!r} starts with 'sslhub': leave the prefix out, it is added to the package "
            f"(sslhub_NAME) and distribution (sslhub-NAME) names"
        )
    package = package_name(name)
    if importlib.util.find_spec(package) is not None:
        raise ScaffoldError(
            f"a module called {package} is already importable here, so a plugin '{name}' would clash with "
            "it; choose another name"
        )
    return name


def package_name(name: str) -> str:
    """The import package of plugin ``name``: ``sslhub_NAME``."""
    return f"sslhub_{name}"


def distribution_name(name: str) -> str:
    """The pip distribution of plugin ``name``: ``sslhub-NAME`` (hyphens for underscores)."""
    return "sslhub-" + name.replace("_", "-")


def default_directory(name: str) -> Path:
    """Where ``sslhub new-plugin NAME`` writes without ``--directory``: ``./sslhub-NAME``."""
    return Path(distribution_name(validate_name(name)))


def create_plugin(name: str, directory: Path) -> Path:
    """Write an installable plugin package called ``name`` into ``directory``.

    Args:
        name: snake_case plugin name, e.g. ``my_method``: the entry-point name, the package
            ``sslhub_my_method``, the distribution ``sslhub-my-method`` and the prefix of the
            example components (``my_method_gaussian_noise``, ``my_method_agreement``).
        directory: the project directory to create; it may exist only if it is empty.

    Returns:
        The project directory, absolute.

    Raises:
        ScaffoldError: (a ValueError) if the name is not usable or ``directory`` is a file or
            a non-empty directory (nothing is overwritten).
    """
    validate_name(name)
    directory = Path(directory).expanduser().resolve()
    if directory.exists():
        if not directory.is_dir():
            raise ScaffoldError(f"{directory} exists and is not a directory; give a new directory for the plugin")
        if any(directory.iterdir()):
            raise ScaffoldError(f"{directory} is not empty; give a new or empty directory for the plugin")
    files = render_files(name)
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return directory


def next_steps(name: str, directory: Path) -> str:
    """What to tell the user after :func:`create_plugin` (printed by ``sslhub new-plugin``)."""
    return "\n".join(
        [
            f"created plugin '{name}' ({distribution_name(name)}) in {directory}",
            "next steps:",
            f"  pip install -e '{directory}[test]'",
            f"  pytest {directory / 'tests'}",
            f"  sslhub plugins    (lists '{name}' and its components)",
            f"  sslhub run {directory / 'recipes' / f'{name}_digits.yaml'}",
            "guide: docs/writing-a-plugin.md in sslhub's repository",
        ]
    )


def render_files(name: str) -> dict[str, str]:
    """The files of the plugin package, by path relative to the project directory."""
    from sslhub import __version__

    major, minor = __version__.split(".")[:2]
    values = {
        "name": name,
        "package": package_name(name),
        "distribution": distribution_name(name),
        "title": "".join(part.capitalize() for part in name.split("_")),
        "sslhub_requirement": f"sslhub>={major}.{minor}",
        "next_minor": f"{major}.{int(minor) + 1}",
        "min_version": f"{major}.{minor}",
    }
    package = values["package"]
    templates = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        ".gitignore": _GITIGNORE,
        f"{package}/__init__.py": _INIT,
        f"{package}/plugin.py": _PLUGIN,
        f"{package}/augmentation.py": _AUGMENTATION,
        f"{package}/loss.py": _LOSS,
        f"{package}/objective.py": _OBJECTIVE,
        f"{package}/callbacks.py": _CALLBACKS,
        f"recipes/{name}_digits.yaml": _RECIPE,
        f"tests/test_{name}_plugin.py": _TESTS,
    }
    return {path: Template(text).substitute(values) for path, text in templates.items()}


# -- templates (string.Template: $name, $package, ...; $$ is a literal dollar) -------------------

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "An sslhub plugin: $name"
readme = "README.md"
requires-python = ">=3.11"
# The sslhub versions this plugin supports, as the dependency specifier: pip refuses to install
# the plugin next to an sslhub outside it. Raise the lower bound when you use something newer;
# while sslhub is below 1.0 a minor release may change the plugin API, so add an upper bound
# ("sslhub>=$min_version,<$next_minor") if you would rather be safe than early.
dependencies = ["$sslhub_requirement"]

[project.optional-dependencies]
test = ["pytest>=8"]

# How sslhub finds the plugin once installed: `sslhub plugins` lists it as "$name".
[project.entry-points.sslhub]
$name = "$package.plugin"

[tool.setuptools]
packages = ["$package"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.ruff]
line-length = 120
"""

_GITIGNORE = """\
__pycache__/
*.egg-info/
build/
dist/
runs/
"""

_README = """\
# $distribution

An [sslhub](https://pypi.org/project/sslhub/) plugin. It registers:

| kind | name | what it does |
| --- | --- | --- |
| augmentation | `${name}_gaussian_noise` | adds Gaussian noise to every floating-point tensor of a batch (any modality) |
| objective | `${name}_agreement` | two views, a projection head, cosine agreement plus a variance hinge against collapse (any encoder) |
| callback | `CsvLogger` | writes step, loss and learning rate of each logging step to `RUN_DIR/${name}_log.csv` (a logger to replace with MLflow, W&B, ...) |

They are examples to replace with your own components; the layout is the one sslhub expects:
`$package/plugin.py` holds only `@hookimpl` functions that register components, and each
component lives in its own module.

## Install and check

```bash
pip install -e ".[test]"
pytest                     # uses sslhub.testing and the built-in vision plugin
sslhub plugins             # "$name [ok] $distribution 0.1.0 (entry point: $package.plugin)"
sslhub list objectives     # shows ${name}_agreement with its parameters
```

## Use it in a recipe

```bash
sslhub run recipes/${name}_digits.yaml
```

The recipe declares `requires: ["$distribution>=0.1"]`, so on a machine without the plugin
it fails validation with the `pip install` line to run, instead of an unknown-name error.
Without installing, load the plugin for one command with `-p $package.plugin` (the package
must be importable, e.g. from this directory).

## Compatibility

The supported sslhub versions are the `sslhub` dependency specifier in `pyproject.toml`
(`$sslhub_requirement`). Recipes pin this plugin's version with `requires:`.
"""

_INIT = '''\
"""$distribution: an sslhub plugin.

The hooks are in :mod:`$package.plugin`; each component lives in its own module.
"""

__version__ = "0.1.0"
'''

_PLUGIN = '''\
"""Hook implementations of $distribution: they only register components and callbacks.

sslhub calls each register hook once per catalog with the registry of that kind, and
``sslhub_register_callbacks`` once per run; the hooks are documented in sslhub's docs/hooks.md.
"""

from __future__ import annotations

from sslhub import hookimpl

from $package.augmentation import GaussianNoise, GaussianNoiseParams
from $package.callbacks import CsvLogger
from $package.objective import AgreementObjective, AgreementParams


@hookimpl
def sslhub_register_augmentations(registry) -> None:
    # No modalities=: it works on the float tensors of any batch.
    registry.register(
        "${name}_gaussian_noise",
        GaussianNoise,
        params=GaussianNoiseParams,
    )


@hookimpl
def sslhub_register_objectives(registry) -> None:
    # Reads only pooled features, which every encoder provides: no modalities= or requires=.
    registry.register(
        "${name}_agreement",
        AgreementObjective,
        params=AgreementParams,
    )


@hookimpl
def sslhub_register_callbacks(registry) -> None:
    # Every run of every recipe gets it while the plugin is installed; rank 0 only by default.
    registry.add(CsvLogger(registry.run.run_dir / "${name}_log.csv"))
'''

_CALLBACKS = '''\
"""``CsvLogger``: training events to a CSV file, the shape of an MLflow or W&B logger."""

from __future__ import annotations

import csv
from pathlib import Path

import sslhub


class CsvLogger(sslhub.Callback):
    """Writes ``step, loss, lr`` of every logging step (``train.log_every``) to ``path``.

    ``event.metrics`` is filled on logging steps only: reading the objectives' metrics on every
    step would make each step wait for the device.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._writer = None

    def on_train_start(self, run: sslhub.RunInfo, event: sslhub.TrainStart) -> None:
        new = not self.path.exists()
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(["step", "loss", "lr"])

    def on_step_end(self, run: sslhub.RunInfo, event: sslhub.StepEnd) -> None:
        if event.metrics is not None:
            self._writer.writerow([event.step, event.loss, event.lr])

    def on_train_end(self, run: sslhub.RunInfo, event: sslhub.TrainEnd) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
'''

_AUGMENTATION = '''\
"""``${name}_gaussian_noise``: Gaussian noise on every float tensor of a batch."""

from __future__ import annotations

import torch
from pydantic import Field
from sslhub import Augmentation, Batch, BuildContext, Params


class GaussianNoiseParams(Params):
    """Parameters of ``${name}_gaussian_noise``."""

    std: float = Field(0.05, ge=0, description="standard deviation of the added noise")
    p: float = Field(1.0, ge=0, le=1, description="probability that a sample gets noise")


class GaussianNoise(Augmentation):
    """Add ``N(0, std^2)`` noise to each float tensor, for a random ``p`` share of the samples.

    Integer tensors (token ids, labels) are left alone. ``[B, ...] -> [B, ...]``, same dtype.
    Randomness comes from torch's generator on the batch's device, so sslhub's checkpoints
    restore it exactly.
    """

    def __init__(self, params: GaussianNoiseParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params or GaussianNoiseParams()

    def forward(self, batch: Batch) -> Batch:
        out = dict(batch)  # a new dict: the input batch is not modified
        for key, value in batch.items():
            if not value.is_floating_point():
                continue
            # one draw per sample, broadcast over its other dimensions
            shape = (value.shape[0],) + (1,) * (value.dim() - 1)
            apply = torch.rand(shape, device=value.device) < self.params.p
            out[key] = torch.where(apply, value + self.params.std * torch.randn_like(value), value)
        return out
'''

_LOSS = '''\
"""The loss of ``${name}_agreement``, usable on its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def agreement_loss(
    z_a: Tensor, z_b: Tensor, variance_weight: float = 1.0, variance_target: float = 1.0, eps: float = 1e-4
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(1 - mean_i cos(z_a[i], z_b[i])) + variance_weight * (v(z_a) + v(z_b))``.

    ``v(z) = mean_j max(0, variance_target - sqrt(Var_i(z[i, j]) + eps))`` keeps every
    dimension spread over the batch: agreement alone is minimised by mapping everything to
    one point.

    Args:
        z_a: ``[N, D]`` embeddings of the first view.
        z_b: ``[N, D]`` embeddings of the second view (same samples, same order).
        variance_weight: weight of the variance hinge.
        variance_target: standard deviation each dimension is pushed up to.
        eps: added to the variance before the square root (finite gradient at zero).

    Returns:
        The loss (0-d) and its detached terms ``cosine`` (mean similarity) and ``variance``.

    Raises:
        ValueError: for different shapes or fewer than two samples.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(
            f"agreement_loss needs two [N, D] tensors of one shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}",
        )
    if z_a.shape[0] < 2:
        raise ValueError(f"agreement_loss needs at least 2 samples for the variance term, got {z_a.shape[0]}")
    cosine = F.cosine_similarity(z_a, z_b, dim=1).mean()
    variance = sum(F.relu(variance_target - torch.sqrt(z.var(dim=0) + eps)).mean() for z in (z_a, z_b))
    loss = (1 - cosine) + variance_weight * variance
    return loss, {"cosine": cosine.detach(), "variance": variance.detach()}
'''

_OBJECTIVE = '''\
"""``${name}_agreement``: two views should agree after a projection head."""

from __future__ import annotations

from pydantic import Field
from sslhub import Batch, BuildContext, Encoder, Objective, ObjectiveOutput, Params
from torch import nn

from $package.loss import agreement_loss


class AgreementParams(Params):
    """Parameters of ``${name}_agreement``."""

    hidden_dim: int = Field(256, gt=0, description="hidden width of the projection head")
    projection_dim: int = Field(64, gt=0, description="size of the embeddings the loss compares")
    variance_weight: float = Field(1.0, ge=0, description="weight of the variance hinge against collapse")
    variance_target: float = Field(1.0, gt=0, description="standard deviation each embedding dimension is pushed to")


class AgreementObjective(Objective):
    """Cosine agreement between the projected pooled features of two views, plus a variance hinge.

    Works with any encoder: it reads ``pooled`` (``[B, feature_dim]``) only. Metrics: the
    mean ``cosine`` similarity of the two views and the ``variance`` hinge.
    """

    num_views = 2

    def __init__(self, params: AgreementParams | None = None, context: BuildContext | None = None):
        super().__init__()
        self.params = params = params or AgreementParams()
        encoder = context.encoder if context is not None else None
        if encoder is None or not getattr(encoder, "feature_dim", 0):
            raise ValueError(
                "${name}_agreement needs the built encoder (context.encoder) to size its head",
            )
        # Heads are submodules of the objective: trained with the encoder, not exported.
        self.head = nn.Sequential(
            nn.Linear(encoder.feature_dim, params.hidden_dim),
            nn.BatchNorm1d(params.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(params.hidden_dim, params.projection_dim),
        )

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:
        if len(views) != 2:
            raise ValueError(
                f"${name}_agreement needs 2 views, got {len(views)}",
            )
        z_a = self.head(encoder(views[0]).pooled)
        z_b = self.head(encoder(views[1]).pooled)
        loss, terms = agreement_loss(z_a, z_b, self.params.variance_weight, self.params.variance_target)
        return ObjectiveOutput(loss=loss, metrics=terms)
'''

_RECIPE = """\
# ${name}_agreement on the embedded handwritten digits, with the vision plugin's small CNN.
#   pip install -e .   then   sslhub run recipes/${name}_digits.yaml
name: ${name}-digits
seed: 0
requires: ["$distribution>=0.1"]   # validation names the pip install line if it is missing
data:
  modality: image
  source: {type: default}
  image_size: 32
augment:
  - {name: random_resized_crop, scale: [0.3, 1.0]}
  - {name: ${name}_gaussian_noise, std: 0.05}
encoder:
  name: small_cnn
  width: 16
  stages: 3
  stem_stride: 2
objectives:
  - {name: ${name}_agreement, projection_dim: 64}
train:
  steps: 300
  batch_size: 128
  optimizer: {name: adamw, lr: 2.0e-3, weight_decay: 0.05}
  schedule: cosine
  warmup: 0.05
evaluate:
  knn: {k: 20}
  linear_probe: {epochs: 100}
"""

_TESTS = '''\
"""Tests of $distribution with sslhub's testing kit (:mod:`sslhub.testing`).

Components are built the way sslhub's engine builds them, next to the built-in vision
plugin's ``image`` modality (the embedded digits) and ``small_cnn`` encoder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from sslhub.testing import (
    build_components,
    catalog_with,
    check_augmentation,
    check_objective_learns,
    run_recipe_for_steps,
)

from $package.loss import agreement_loss

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PLUGIN = "$package.plugin"
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
RECIPE = RECIPES / "${name}_digits.yaml"
# Small sizes keep the tests to seconds on a CPU.
SMALL = {
    "image": {"image_size": 16},
    "small_cnn": {"width": 8, "stages": 2},
    "${name}_agreement": {"hidden_dim": 64, "projection_dim": 32},
}


@pytest.fixture(scope="module")
def catalog():
    # Only these two plugins, loaded by module name: the test does not depend on what else is installed.
    return catalog_with("sslhub_vision.plugin", PLUGIN)


def test_the_plugin_registers_its_components(catalog):
    augmentation = catalog.augmentations.get("${name}_gaussian_noise")
    objective = catalog.objectives.get("${name}_agreement")
    for component in (augmentation, objective):
        assert component.provider.plugin == PLUGIN
        assert not component.modalities  # any modality


def test_gaussian_noise_keeps_shapes_and_dtypes_and_changes_the_images(catalog):
    modality, _, _, [noise] = build_components(
        catalog,
        modality="image",
        encoder="small_cnn",
        augment=["${name}_gaussian_noise"],
        params=SMALL,
    )
    batch = modality.on_device(modality.example_batch(8))
    check_augmentation(noise, batch)
    assert not torch.equal(noise(batch)["image"], batch["image"])


def test_agreement_loss_matches_a_hand_computation():
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss, terms = agreement_loss(z_a, z_b)
    # cosine: 1 for the first pair, 0 for the second -> mean 0.5
    # variance: z_a has variance 0.5 per dimension -> hinge 1 - sqrt(0.5001) = 0.29282 (mean over dimensions);
    #           z_b has variance 0 -> hinge 1 - sqrt(0.0001) = 0.99
    assert terms["cosine"].item() == pytest.approx(0.5)
    assert terms["variance"].item() == pytest.approx(0.29282 + 0.99, abs=1e-5)
    assert loss.item() == pytest.approx((1 - 0.5) + 0.29282 + 0.99, abs=1e-5)


def test_the_objective_learns_on_the_digits(catalog):
    modality, encoder, objective, augmentations = build_components(
        catalog,
        modality="image",
        encoder="small_cnn",
        objective="${name}_agreement",
        augment=["${name}_gaussian_noise"],
        params=SMALL,
    )
    dataset = modality.train_dataset()
    batches = [modality.on_device(modality.collate([dataset[i] for i in range(s, s + 16)])) for s in (0, 16)]
    torch.manual_seed(0)
    # the loss must fall by 5% over 20 Adam steps (it falls far more: the views agree quickly)
    check_objective_learns(objective, encoder, batches, augmentations, steps=20, lr=2e-3)


def test_the_example_recipe_runs(catalog):
    recipe = yaml.safe_load(RECIPE.read_text())
    # requires: is checked against installed distributions; catalog_with loads modules by name.
    recipe.pop("requires")
    small = {"data.image_size": 16, "encoder.width": 8, "train.batch_size": 16}
    summary = run_recipe_for_steps(recipe, 3, catalog=catalog, overrides=small)
    assert len(summary["losses"]) == 3


def test_the_csv_logger_receives_every_logging_step(catalog, tmp_path):
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.pop("requires")
    small = {"data.image_size": 16, "encoder.width": 8, "train.batch_size": 16}
    run_recipe_for_steps(recipe, 3, catalog=catalog, out=tmp_path / "run", overrides=small)
    rows = (tmp_path / "run" / "${name}_log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr" and [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]
'''
