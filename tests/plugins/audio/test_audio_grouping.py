"""Audio folders grouped by speaker (a path pattern): unseen test speakers, validation errors at the recipe line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from sslhub.cli import main
from sslhub_audio.modality import AudioModality, AudioParams

RECIPE = """\
name: grouped-audio
data:
  modality: audio
  duration: 0.1
  source: {{type: folder, path: {path}, group_pattern: '{pattern}'}}
encoder: {{name: frame_transformer}}
objectives: [{{name: masked_audio}}]
"""


def make_folder(root: Path) -> Path:
    """``yes``/``no`` clips by speakers ``spk0``..``spk3``, two takes each."""
    rng = np.random.default_rng(0)
    for word in ("yes", "no"):
        (root / word).mkdir(parents=True, exist_ok=True)
        for speaker in range(4):
            for take in range(2):
                clip = (0.1 * rng.standard_normal(1600)).astype(np.float32)
                soundfile.write(root / word / f"spk{speaker}_take{take}.wav", clip, 16000)
    return root


def test_the_evaluation_split_keeps_speakers_apart(tmp_path):
    folder = make_folder(tmp_path / "clips")
    params = AudioParams.model_validate(
        {"source": {"type": "folder", "path": str(folder), "group_pattern": r"spk(?P<group>\d)"}, "duration": 0.1}
    )
    split = AudioModality(params).eval_split()
    speakers = {side: {f.path.name[:4] for f in getattr(split, side).files} for side in ("train", "test")}
    assert speakers["test"] and not speakers["train"] & speakers["test"]
    assert split.groups == {"train": len(speakers["train"]), "test": len(speakers["test"])}
    assert split.train[0]["waveform"].shape == (1600,)


def test_a_pattern_that_matches_nothing_is_a_recipe_error_at_its_line(tmp_path, capsys):
    folder = make_folder(tmp_path / "clips")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(path=folder, pattern=r"speaker(\d)"))
    assert main(["validate", str(recipe), "-p", "no:vision", "-p", "no:text"]) == 2
    assert (
        f"recipe.yaml:5: data.source.group_pattern: pattern 'speaker(\\d)' matches none of the 16 files under "
        f"{folder} (e.g. 'no/spk0_take0.wav')"
    ) in capsys.readouterr().err


def test_labeled_split_of_another_folder(tmp_path):
    model = AudioModality(AudioParams(duration=0.1))
    folder = make_folder(tmp_path / "other")
    source = AudioParams.model_validate({"source": {"type": "folder", "path": str(folder)}, "duration": 0.1}).source
    split = model.labeled_split(source, 0.25, seed=0)
    assert split.source == str(folder) and split.groups is None
    assert sorted(int(split.test[i]["label"]) for i in range(len(split.test))) == [0, 0, 1, 1]
