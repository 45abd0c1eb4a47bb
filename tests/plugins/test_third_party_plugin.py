"""A third-party plugin from outside this repository's package: tests/data/sslhub_vicreg.

sslhub-vicreg 0.2.0 is a distribution of its own (pyproject.toml, ``sslhub`` entry point)
registering the ``vicreg`` objective and the ``feature_noise`` augmentation. It is installed
with pip into a temporary ``--target`` directory and used the three ways a user can:

* installed, through its entry point (the real ``sslhub`` command with that directory on
  ``PYTHONPATH``): listed with its version, its parameters shown, a recipe trains with it,
  and ``requires:`` in recipes is checked against the installed version;
* not installed, loaded for one command with ``-p sslhub_vicreg.plugin``;
* from Python, with the ``sslhub.objectives.register`` decorator.

The built-in plugins are blocked in the child processes by distribution name
(``SSLHUB_DISABLE_PLUGINS=sslhub``) and the vision plugin loaded with ``-p``: this keeps each
command to one torch import (~4 s) and the output about this plugin.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from plugin_install import cached_install

import sslhub
from sslhub import Catalog
from sslhub.cli import main
from sslhub.testing import check_augmentation, run_recipe_for_steps

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VICREG_SRC = Path(__file__).resolve().parent.parent / "data" / "sslhub_vicreg"
RECIPE = VICREG_SRC / "recipe.yaml"
VISION = ["-p", "sslhub_vision.plugin"]


# -- installing the plugin ----------------------------------------------------------------


@pytest.fixture(scope="module")
def vicreg_site(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """A directory where pip installed sslhub-vicreg (package + .dist-info with the entry point).

    Kept in pytest's cache under a hash of the plugin's sources: building the wheel costs a few
    seconds and the sources rarely change.
    """
    return cached_install("vicreg", [VICREG_SRC], pytestconfig, tmp_path_factory.mktemp("vicreg-install"))


def _child_env(pythonpath: list[Path]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "SSLHUB_DISABLE_PLUGINS"}}
    env.update({"HF_HUB_OFFLINE": "1", "SSLHUB_DISABLE_PLUGINS": "sslhub", "SSLHUB_STRICT_PLUGINS": "1"})
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    return env


class Command:
    """The real ``sslhub`` command started in a child process: offline, strict about plugin
    problems, built-in plugins blocked. :meth:`result` waits for it."""

    def __init__(self, *args: str, cwd: Path, pythonpath: list[Path] = ()):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sslhub", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(list(pythonpath)),
            cwd=cwd,  # -p also searches the working directory: an empty one, so only PYTHONPATH counts
        )
        self._result: subprocess.CompletedProcess[str] | None = None

    def result(self) -> subprocess.CompletedProcess[str]:
        if self._result is None:
            stdout, stderr = self.process.communicate(timeout=300)
            self._result = subprocess.CompletedProcess(self.process.args, self.process.returncode, stdout, stderr)
        return self._result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def write_recipe(path: Path, **changes: object) -> Path:
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(changes)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def commands(vicreg_site: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every command these tests check, started at once: each child spends most of its time
    importing torch, so running them side by side roughly halves the wall time on two cores.

    ``installed_run`` trains the recipe with the plugin installed (its directory on PYTHONPATH);
    ``uninstalled`` validates it without; ``with_p`` trains it with the plugin loaded by module
    name from its source directory, not installed.
    """
    tmp = tmp_path_factory.mktemp("third-party")
    recipe = write_recipe(tmp / "vicreg.yaml")
    # requires: names a distribution, and a module given with -p is not one, so it goes
    recipe_without_requires = write_recipe(tmp / "vicreg-p.yaml", requires=[])
    started = {
        "plugins": Command("plugins", cwd=tmp, pythonpath=[vicreg_site]),
        "list": Command("list", "objectives", cwd=tmp, pythonpath=[vicreg_site]),
        "installed_run": Command(
            "run", str(recipe), *VISION, "--out", str(tmp / "installed-run"), "--progress", "off",
            cwd=tmp, pythonpath=[vicreg_site],
        ),
        "uninstalled": Command("validate", str(recipe), *VISION, cwd=tmp),
        "with_p": Command(
            "run", str(recipe_without_requires), *VISION, "-p", "sslhub_vicreg.plugin", "--set", "train.steps=3",
            "--out", str(tmp / "p-run"), "--progress", "off", cwd=tmp, pythonpath=[VICREG_SRC],
        ),
    }  # fmt: skip
    yield {"recipe": recipe, "tmp": tmp, **started}
    for command in started.values():
        command.stop()


def first_and_last(losses: list[float], window: int = 6) -> tuple[float, float]:
    return sum(losses[:window]) / window, sum(losses[-window:]) / window


# -- installed, through the entry point --------------------------------------------------------


@pytest.mark.slow
def test_sslhub_plugins_lists_the_installed_plugin_with_its_version(commands):
    result = commands["plugins"].result()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "vicreg [ok] sslhub-vicreg 0.2.0 (entry point: sslhub_vicreg.plugin)" in lines
    assert "  hooks: sslhub_register_augmentations, sslhub_register_objectives" in lines
    assert "  components: augmentation:feature_noise, objective:vicreg" in lines


def test_sslhub_list_objectives_shows_vicreg_with_its_parameters(commands):
    result = commands["list"].result()
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    assert "  vicreg  [vicreg]\n" in stdout
    # the description is the first line of the class docstring
    assert (
        "      VICReg: encoder -> expander -> invariance + variance + covariance terms between two views.\n" in stdout
    )
    for line in (
        "invariance_weight: float (default 25.0)  lambda: weight of the mean squared error between views",
        "variance_weight: float (default 25.0)  mu: weight of the standard-deviation hinge",
        "covariance_weight: float (default 1.0)  nu: weight of the off-diagonal covariance penalty",
        "expander_dim: int (default 256)  width of every expander layer (8192 in the paper)",
    ):
        assert f"      {line}\n" in stdout


def test_requires_a_newer_plugin_version_fails_validation_naming_the_version_and_what_to_install(
    vicreg_site, tmp_path, monkeypatch, capsys
):
    # in process: the same code as the command, without another ~4 s torch import
    monkeypatch.syspath_prepend(str(vicreg_site))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    recipe = write_recipe(tmp_path / "vicreg.yaml", requires=["sslhub-vicreg>=0.3"])
    assert main(["validate", str(recipe), *VISION]) == 2
    stderr = capsys.readouterr().err
    assert "error: invalid recipe (1 problem):\n" in stderr
    assert (
        f"{recipe}:4: requires[0]: plugin 'sslhub-vicreg' 0.2.0 is installed, but the recipe needs >=0.3; "
        "pip install 'sslhub-vicreg>=0.3'"
    ) in stderr


def test_a_recipe_using_the_installed_plugin_trains_and_its_loss_falls(commands):
    result = commands["installed_run"].result()
    assert result.returncode == 0, result.stderr
    out = commands["tmp"] / "installed-run"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))
    losses = [r["loss"] for r in records]
    assert all(math.isfinite(loss) for loss in losses)
    first, last = first_and_last(losses)
    assert last < 0.9 * first, f"VICReg loss did not fall: first {first:.3f}, last {last:.3f}"
    # the objective's own terms are logged under its name
    assert {"vicreg/invariance", "vicreg/variance", "vicreg/covariance", "vicreg/embedding_std"} <= set(records[-1])
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["objectives"][0]["invariance_weight"] == 25.0
    assert resolved["requires"] == ["sslhub-vicreg>=0.2"]


def test_without_the_plugin_installed_the_recipe_fails_validation_naming_the_missing_plugin(commands):
    result, recipe = commands["uninstalled"].result(), commands["recipe"]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{recipe}:4: requires[0]: plugin 'sslhub-vicreg' is not installed; pip install 'sslhub-vicreg>=0.2'" in (
        result.stderr
    )
    # the components it would provide are unknown too, and said so
    assert "augment[1].name: unknown augmentation 'feature_noise'" in result.stderr
    assert "objectives[0].name: unknown objective 'vicreg'" in result.stderr


# -- not installed: -p and the Python API -------------------------------------------------------


def test_the_same_plugin_module_loads_with_p_without_being_installed(commands):
    result = commands["with_p"].result()
    assert result.returncode == 0, result.stderr
    losses = [
        json.loads(line)["loss"] for line in (commands["tmp"] / "p-run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)


def test_the_same_objective_registered_with_the_python_decorator_api_trains(monkeypatch):
    monkeypatch.syspath_prepend(str(VICREG_SRC))  # a plain importable module, not installed
    from sslhub_vicreg.objective import VICRegObjective, VICRegParams

    threads = torch.get_num_threads()  # the recipe sets train.threads, which is process-wide
    sslhub.objectives.register("vicreg_py", params=VICRegParams)(VICRegObjective)
    try:
        catalog = Catalog.load(["sslhub_vision.plugin"], entry_points=False)
        component = catalog.objectives.get("vicreg_py")
        assert component.provider.plugin == "sslhub_vicreg.objective"
        assert component.params is VICRegParams
        recipe = yaml.safe_load(RECIPE.read_text())
        recipe["requires"] = []
        recipe["augment"] = [a for a in recipe["augment"] if a["name"] != "feature_noise"]  # not registered here
        recipe["objectives"][0]["name"] = "vicreg_py"
        losses = run_recipe_for_steps(recipe, 30, catalog=catalog)["losses"]
    finally:
        sslhub.objectives.unregister("vicreg_py")
        torch.set_num_threads(threads)
    first, last = first_and_last(losses)
    assert last < 0.9 * first, f"VICReg loss did not fall: first {first:.3f}, last {last:.3f}"
    assert "vicreg_py" not in Catalog.load(entry_points=False).objectives


# -- the plugin's components on their own ------------------------------------------------------


@pytest.fixture
def vicreg_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(VICREG_SRC))
    from sslhub_vicreg import loss, noise

    return loss, noise


def test_vicreg_loss_matches_a_hand_computation(vicreg_modules):
    loss_module, _ = vicreg_modules
    z_a = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)
    z_b = torch.zeros(2, 2, requires_grad=True)
    loss, terms = loss_module.vicreg_loss(z_a, z_b)
    # invariance: mean of squared differences = (0 + 0 + 4 + 4) / 4 = 2
    # variance: z_a has unbiased variance 2 per dimension -> std 1.414 > 1, no hinge;
    #           z_b has variance 0 -> std sqrt(1e-4) = 0.01, hinge 0.99 in both dimensions -> mean 0.99
    # covariance: z_a centred is [[-1, -1], [1, 1]], C = [[2, 2], [2, 2]] -> (2^2 + 2^2) / 2 = 4; z_b: 0
    assert terms["invariance"].item() == pytest.approx(2.0)
    assert terms["variance"].item() == pytest.approx(0.99)
    assert terms["covariance"].item() == pytest.approx(4.0)
    assert loss.item() == pytest.approx(25 * 2.0 + 25 * 0.99 + 1 * 4.0)  # 78.75
    loss.backward()
    assert z_a.grad.abs().sum() > 0 and z_b.grad.abs().sum() > 0
    # weights are honoured
    weighted, _ = loss_module.vicreg_loss(z_a, z_b, invariance_weight=1, variance_weight=2, covariance_weight=3)
    assert weighted.item() == pytest.approx(2.0 + 2 * 0.99 + 3 * 4.0)


def test_identical_whitened_views_cost_nothing_and_bad_shapes_are_refused(vicreg_modules):
    loss_module, _ = vicreg_modules
    # four points on the axes: zero mean, no covariance, unbiased variance 2/3 per dimension
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) * math.sqrt(1.5)
    loss, terms = loss_module.vicreg_loss(z, z.clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert terms["covariance"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        loss_module.vicreg_loss(z, z[:, :1])
    with pytest.raises(ValueError, match="at least 2 samples"):
        loss_module.vicreg_loss(z[:1], z[:1])


def test_feature_noise_perturbs_float_tensors_per_sample_and_leaves_integers_alone(vicreg_modules):
    _, noise = vicreg_modules
    torch.manual_seed(0)
    batch = {"x": torch.rand(64, 3, 8, 8), "ids": torch.arange(64)}
    augmentation = noise.FeatureNoise(noise.FeatureNoiseParams(std=0.1, p=0.5, clamp=(0.0, 1.0)), None)
    check_augmentation(augmentation, batch)
    out = augmentation(batch)
    assert torch.equal(out["ids"], batch["ids"])
    changed = (out["x"] != batch["x"]).flatten(1).any(dim=1)
    assert 16 < changed.sum() < 48  # about half the samples, drawn independently
    assert out["x"].min() >= 0 and out["x"].max() <= 1
    unclamped = noise.FeatureNoise(noise.FeatureNoiseParams(std=0.1), None)(batch)["x"]
    assert (unclamped - batch["x"]).std().item() == pytest.approx(0.1, rel=0.05)
    identity = noise.FeatureNoise(noise.FeatureNoiseParams(std=0.0), None)(batch)
    assert torch.equal(identity["x"], batch["x"])
    with pytest.raises(KeyError, match="'missing' is not in the batch"):
        noise.FeatureNoise(noise.FeatureNoiseParams(keys=["missing"]), None)(batch)
