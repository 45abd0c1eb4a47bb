"""Tampered or half-written run directories: a run directory is untrusted input.

One tiny toy run (4 steps, checkpoints at 2 and 4) is trained once through ``main()``; each
case copies it, spoils the copy as the row says, runs a command on it and checks the exit code,
the message, and what must not happen: a module from the run directory imported, a file outside
the run deleted, a traceback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sslhub.cli import main

DATA = Path(__file__).resolve().parent.parent / "data"
RECIPE = DATA / "toy_recipe.yaml"
SMALL = ["--set", "export=null", "--set", "evaluate.enabled=false", "--progress", "off"]
MARKER = "imported-from-the-run-directory"
EVIL_MODULE = f"from pathlib import Path\nPath({MARKER!r}).write_text('this code ran')\n"


def dead_pid() -> int:
    """The id of a process that has exited (a kill's victim, for the names of its temporary files)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def manifest(run: Path) -> Path:
    return run / "checkpoints" / "manifest.json"


def set_entry(index: int, key: str, value) -> Callable[[Path], None]:
    return lambda run: edit_json(manifest(run), lambda m: m["checkpoints"][index].__setitem__(key, value))


def record_plugin_args(*args: str, evil_module: bool = True) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        edit_json(run / "environment.json", lambda e: e.__setitem__("plugin_args", list(args)))
        if evil_module:
            (run / "evil_plugin.py").write_text(EVIL_MODULE)

    return tamper


def write_temp_files(run: Path) -> None:
    pid = dead_pid()
    (run / "checkpoints" / f".step_00000006.pt.tmp-{pid}").write_bytes(b"half a checkpoint")
    (run / "checkpoints" / f".manifest.json.tmp-{pid}").write_text("{")
    (run / f".summary.json.tmp-{pid}").write_text("{")
    (run / "checkpoints" / ".step_00000008.pt.tmp-1").write_bytes(b"pid 1 is alive: not ours to delete")


def kill_before_first_checkpoint(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")


@dataclass(frozen=True)
class Case:
    id: str
    bug: str
    tamper: Callable[[Path], None]
    #: the command after ``sslhub``; RUN stands for the run directory
    command: tuple[str, ...]
    exit_code: int
    stderr: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None
    #: run in the run directory (where a planted module would be importable)
    in_run_dir: bool = False


RESUME = ("run", str(RECIPE), "-p", "toy_plugin", "--resume", "RUN", *SMALL, "--set", "train.steps=6")
EVALUATE = ("evaluate", "RUN", "-p", "toy_plugin")
BAD_NAME = "is not a checkpoint file name (step_NNNNNNNN.pt)"
REMEDY = "or delete it to rebuild it from the checkpoint files"


def victim_survives(run: Path) -> None:
    assert (run.parent / "victim.txt").read_text() == "keep me"


def nothing_imported(run: Path) -> None:
    assert not (run / MARKER).exists(), "a module named in environment.json was imported"


def resumed_to_step_6(run: Path) -> None:
    assert json.loads((run / "summary.json").read_text())["steps"] == 6


def temp_files_cleaned(run: Path) -> None:
    left = sorted(p.name for p in run.rglob(".*.tmp-*"))
    assert left == [".step_00000008.pt.tmp-1"]
    resumed_to_step_6(run)


def restarted_from_step_0(run: Path) -> None:
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[0] <= 5, "metrics of the killed attempt must not stay"


CASES = [
    Case(
        "plugin_args_name_a_module_in_the_run_dir_on_evaluate",
        "environment.json's -p modules were imported: code in the run directory ran",
        record_plugin_args("evil_plugin", "toy_plugin"),
        EVALUATE,
        0,
        ("'evil_plugin'", "is never imported automatically", "add -p evil_plugin to the command"),
        nothing_imported,
        in_run_dir=True,
    ),
    Case(
        "plugin_args_name_a_module_in_the_run_dir_on_resume",
        "environment.json's -p modules were imported on --resume",
        record_plugin_args("evil_plugin", "toy_plugin"),
        RESUME,
        0,
        ("add -p evil_plugin to the command",),
        nothing_imported,
        in_run_dir=True,
    ),
    Case(
        "recorded_plugin_needed_but_not_given",
        "(the recorded module used to be imported)",
        record_plugin_args("toy_plugin", evil_module=False),
        ("evaluate", "RUN"),
        2,
        (
            "unknown modality 'toy_vectors'",
            "environment.json: plugin_args: the run was trained with 'toy_plugin' loaded with -p",
            "tests/data/toy_plugin.py to the command",  # the file it was imported from: works from any folder
        ),
    ),
    Case(
        "manifest_file_outside_the_folder_on_resume",
        "rotation deleted a file outside the run directory",
        set_entry(0, "file", "../../victim.txt"),
        RESUME,
        1,
        ("checkpoints[0].file '../../victim.txt' " + BAD_NAME, REMEDY),
        victim_survives,
    ),
    Case(
        "manifest_file_absolute_on_evaluate",
        "a path outside the directory was loaded",
        set_entry(1, "file", "/etc/passwd"),
        EVALUATE,
        1,
        ("checkpoints[1].file '/etc/passwd' " + BAD_NAME,),
    ),
    Case(
        "manifest_file_names_the_manifest",
        "rotation would delete any file of the folder the manifest names",
        set_entry(0, "file", "manifest.json"),
        RESUME,
        1,
        ("checkpoints[0].file 'manifest.json' " + BAD_NAME,),
    ),
    Case(
        "manifest_step_is_a_string",
        "the next save crashed with TypeError",
        set_entry(1, "step", "4"),
        RESUME,
        1,
        ("checkpoints[1].step must be a non-negative integer, got '4'", REMEDY),
    ),
    Case(
        "manifest_size_is_a_boolean",
        "(types were not checked)",
        set_entry(0, "size", True),
        RESUME,
        1,
        ("checkpoints[0].size must be a non-negative integer, got True",),
    ),
    Case(
        "manifest_deleted",
        "--resume refused although two good checkpoints were there",
        lambda run: manifest(run).unlink(),
        RESUME,
        0,
        ("is missing; rebuilt it from the checkpoint files that load: step_00000002.pt, step_00000004.pt",),
        resumed_to_step_6,
    ),
    Case(
        "manifest_truncated",
        "--resume refused although two good checkpoints were there",
        lambda run: manifest(run).write_text(manifest(run).read_text()[:25]),
        RESUME,
        0,
        ("is unreadable", "rebuilt it from the checkpoint files that load: step_00000002.pt, step_00000004.pt"),
        resumed_to_step_6,
    ),
    Case(
        "manifest_deleted_and_newest_checkpoint_truncated",
        "(a rebuild must verify that each file loads)",
        lambda run: (
            manifest(run).unlink(),
            (run / "checkpoints" / "step_00000004.pt").write_bytes(b"PK\x03\x04 truncated"),
        ),
        RESUME,
        0,
        ("files that load: step_00000002.pt (skipped: step_00000004.pt (cannot load checkpoint",),
        resumed_to_step_6,
    ),
    Case(
        "temporary_files_of_a_killed_write",
        ".tmp-PID files stayed forever",
        write_temp_files,
        RESUME,
        0,
        ("left by an interrupted write",),
        temp_files_cleaned,
    ),
    Case(
        "killed_before_the_first_checkpoint",
        "--resume refused: 'start a new run instead'",
        kill_before_first_checkpoint,
        RESUME,
        0,
        ("holds no checkpoint (the run stopped before its first one): starting it from the beginning (step 0)",),
        restarted_from_step_0,
    ),
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(DATA))
        patch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
        command = ["run", str(RECIPE), "-p", "toy_plugin", "--out", str(out), *SMALL]
        assert main([*command, "--set", "train.steps=4", "--set", "train.checkpoint_every=2"]) == 0
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_run_directory(case: Case, trained_run, tmp_path, monkeypatch, capsys, caplog):
    run = tmp_path / "shared" / "run"
    shutil.copytree(trained_run, run)
    (run.parent / "victim.txt").write_text("keep me")
    case.tamper(run)
    monkeypatch.syspath_prepend(str(DATA))
    monkeypatch.setenv("SSLHUB_DISABLE_PLUGINS", "sslhub")
    monkeypatch.delenv("SSLHUB_STRICT_PLUGINS", raising=False)
    monkeypatch.chdir(run if case.in_run_dir else tmp_path)
    sys.modules.pop("evil_plugin", None)
    capsys.readouterr()
    assert main([str(run) if part == "RUN" else part for part in case.command]) == case.exit_code
    err = capsys.readouterr().err + caplog.text  # log records go to pytest's handler, not stderr
    assert "Traceback" not in err
    for fragment in case.stderr:
        assert fragment in err, err
    victim_survives(run)
    if case.check is not None:
        case.check(run)
