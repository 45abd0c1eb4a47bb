"""Checkpoint store: atomic writes, manifest, rotation, refusing pickled code and corrupt files."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from sslhub.checkpoint import CheckpointStore, load_checkpoint, remove_stale_temp_files, temp_path
from sslhub.errors import CheckpointError


def state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}}


def test_rotation_keeps_newest_and_manifest_lists_them(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (10, 20, 30):
        store.save(state(step), step)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step_00000020.pt", "step_00000030.pt"]
    loaded, path = store.load_latest()
    assert loaded["step"] == 30 and path.name == "step_00000030.pt"


def test_truncated_newest_falls_back_to_previous(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(state(1), 1)
    newest = store.save(state(2), 2)
    newest.write_bytes(newest.read_bytes()[:50])
    loaded, path = store.load_latest()
    assert loaded["step"] == 1
    assert "partial write" in caplog.text


def test_file_not_in_manifest_is_ignored(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(state(1), 1)
    torch.save(state(5), tmp_path / "step_00000005.pt")
    assert store.load_latest()[0]["step"] == 1


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"step": 1, "model": Evil()}, handle)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)


def test_no_manifest_means_no_checkpoint(tmp_path):
    assert CheckpointStore(tmp_path).load_latest() is None


# -- a run directory is untrusted: the manifest is checked, never followed outside the folder --


def entries(folder) -> list[dict]:
    return json.loads((folder / "manifest.json").read_text())["checkpoints"]


def write_entries(folder, checkpoints) -> None:
    (folder / "manifest.json").write_text(json.dumps({"checkpoints": checkpoints}))


@pytest.mark.parametrize("name", ["../victim.txt", "/tmp/victim.txt", "sub/step_00000001.pt", "manifest.json", 7])
def test_a_manifest_file_that_is_not_a_checkpoint_name_is_refused_and_nothing_is_deleted(tmp_path, name):
    folder = tmp_path / "checkpoints"
    store = CheckpointStore(folder, keep=1)
    store.save(state(1), 1)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    listed = entries(folder)
    listed[0]["file"] = name
    write_entries(folder, listed)
    with pytest.raises(CheckpointError, match=r"checkpoints\[0\]\.file .* is not a checkpoint file name"):
        store.save(state(2), 2)  # rotation would drop entry 0
    with pytest.raises(CheckpointError, match="only plain file names inside the checkpoint folder"):
        store.load_latest()
    assert victim.read_text() == "keep me" and (folder / "manifest.json").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("step", "1", "checkpoints[0].step must be a non-negative integer, got '1'"),
        ("step", -1, "checkpoints[0].step must be a non-negative integer, got -1"),
        ("size", 1.5, "checkpoints[0].size must be a non-negative integer, got 1.5"),
        ("sha256", None, "checkpoints[0].sha256 must be 64 lowercase hex digits, got None"),
    ],
)
def test_manifest_entries_of_the_wrong_type_are_a_clear_error(tmp_path, key, value, message):
    store = CheckpointStore(tmp_path)
    store.save(state(1), 1)
    listed = entries(tmp_path)
    listed[0][key] = value
    write_entries(tmp_path, listed)
    with pytest.raises(CheckpointError) as info:
        store.save(state(2), 2)
    assert message in str(info.value) and "or delete it to rebuild it from the checkpoint files" in str(info.value)
    with pytest.raises(CheckpointError, match="must be"):
        store.load_latest()


def test_a_checkpoint_behind_a_symbolic_link_is_not_loaded(tmp_path, caplog):
    store = CheckpointStore(tmp_path / "checkpoints")
    path = store.save(state(1), 1)
    outside = tmp_path / "outside.pt"
    path.rename(outside)
    path.symlink_to(outside)
    assert store.load_latest() is None
    assert "is a symbolic link" in caplog.text


@pytest.mark.parametrize("damage", ["delete", "truncate", "not_a_list"])
def test_a_lost_manifest_is_rebuilt_from_the_checkpoints_that_load(tmp_path, caplog, damage):
    store = CheckpointStore(tmp_path, keep=3)
    for step in (1, 2, 3):
        store.save(state(step), step)
    (tmp_path / "step_00000003.pt").write_bytes(b"not a checkpoint")
    torch.save(state(9), tmp_path / "step_00000004.pt")  # loads, but holds another step than its name
    manifest = tmp_path / "manifest.json"
    if damage == "delete":
        manifest.unlink()
    elif damage == "truncate":
        manifest.write_text(manifest.read_text()[:30])
    else:
        manifest.write_text('{"checkpoints": {}}')
    loaded, path = store.load_latest()
    assert loaded["step"] == 2 and path.name == "step_00000002.pt"
    assert "rebuilt it from the checkpoint files that load: step_00000001.pt, step_00000002.pt" in caplog.text
    assert "step_00000003.pt (cannot load checkpoint" in caplog.text
    assert "step_00000004.pt (holds step 9)" in caplog.text
    assert [e["file"] for e in entries(tmp_path)] == ["step_00000001.pt", "step_00000002.pt"]


def test_holds_checkpoints_sees_files_without_a_manifest(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    assert not store.holds_checkpoints()
    store.save(state(1), 1)
    (store.directory / "manifest.json").unlink()
    assert store.holds_checkpoints()


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = tmp_path / f".step_00000001.pt.tmp-{child.pid}"
    alive = tmp_path / f".manifest.json.tmp-{os.getpid()}"
    unrelated = tmp_path / "notes.tmp-1"
    for path in (dead, alive, unrelated):
        path.write_text("x")
    assert temp_path(tmp_path / "step_00000001.pt").name == f".step_00000001.pt.tmp-{os.getpid()}"
    assert remove_stale_temp_files(tmp_path) == [dead]
    assert alive.exists() and unrelated.exists() and not dead.exists()
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_best_weights_survive_rotation_and_a_damaged_copy_is_refused(tmp_path):
    store = CheckpointStore(tmp_path, keep=1)
    assert store.load_best() is None
    store.save_best(state(10), 10)
    for step in (10, 20, 30):
        store.save(state(step), step)
    loaded, path = store.load_best()
    assert loaded["step"] == 10 and path.name == "best.pt" and torch.equal(loaded["model"]["w"], torch.full((3,), 10.0))
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 10
    # A kill between the two writes leaves a best.pt its record does not vouch for.
    torch.save(state(20), tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="best.pt cannot be used: size .* differs|content digest differs"):
        store.load_best()
    (tmp_path / "best.json").unlink()
    with pytest.raises(CheckpointError, match="record .*best.json is unreadable"):
        store.load_best()
