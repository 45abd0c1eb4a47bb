"""Checkpoint store: atomic writes, manifest, rotation, refusing pickled code and corrupt files."""

import pickle

import pytest
import torch

from sslhub.checkpoint import CheckpointStore, load_checkpoint
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
