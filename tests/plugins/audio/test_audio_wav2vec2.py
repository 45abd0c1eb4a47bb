"""wav2vec 2.0 objective: losses against direct computations, the quantizer, learning through ``sslhub run``,
validation, torchrun and resume."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from toy_runs import final_weights, sslhub, sslhub_env, torchrun_command

from sslhub.catalog import Catalog
from sslhub.errors import RecipeError
from sslhub.recipe import resolve_recipe
from sslhub.recipe_yaml import load_recipe_text
from sslhub_audio.encoders.causal_frame_transformer import (
    CausalFrameTransformerEncoder,
    CausalFrameTransformerParams,
)
from sslhub_audio.encoders.frame_transformer import FrameTransformerEncoder, FrameTransformerParams
from sslhub_audio.losses.codebook_diversity import codebook_perplexity, diversity_loss
from sslhub_audio.losses.wav2vec2_contrastive import contrastive_logits, contrastive_loss, sample_distractors
from sslhub_audio.objectives.gumbel_quantizer import GumbelProductQuantizer, straight_through_gumbel
from sslhub_audio.objectives.span_mask import span_mask
from sslhub_audio.objectives.wav2vec2 import Wav2Vec2Objective, Wav2Vec2ObjectiveParams

REPO = Path(__file__).resolve().parents[3]
BLOCKED = ["-p", "no:vision", "-p", "no:text"]


def test_contrastive_loss_matches_a_direct_computation():
    predictions = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    targets = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    distractors = torch.tensor([[1, 2], [0, 2], [0, 1]])
    codes = torch.tensor([[0, 1], [2, 3], [0, 1]])  # frame 2 has frame 0's code: that distractor is left out
    kappa = 0.1
    logits = contrastive_logits(predictions, targets, distractors, codes, kappa)
    loss, accuracy = contrastive_loss(logits)

    def cosine(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    expected, wins = 0.0, 0
    for m in range(3):
        candidates = [m, *distractors[m].tolist()]
        kept = [c for i, c in enumerate(candidates) if i == 0 or not torch.equal(codes[c], codes[m])]
        scores = [cosine(predictions[m], targets[c]) / kappa for c in kept]
        expected += -scores[0] + math.log(sum(math.exp(s) for s in scores))
        wins += scores[0] == max(scores)
    assert logits[2, 1] == float("-inf") and logits[0, 2] == float("-inf")
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)
    assert accuracy.item() == pytest.approx(wins / 3)


def test_distractors_are_other_masked_frames_of_the_same_utterance():
    mask = torch.tensor(
        [
            [True, True, False, True, False, True],
            [False, False, True, False, False, False],  # one masked frame: nothing else to draw
            [False, True, True, False, True, False],
        ]
    )
    distractors = sample_distractors(mask, 200, torch.Generator().manual_seed(0))
    rows = mask.nonzero()[:, 0]
    assert distractors.shape == (8, 200)
    for m in range(8):
        drawn = set(distractors[m].tolist())
        same_row = {i for i in range(8) if rows[i] == rows[m]}
        if len(same_row) == 1:
            assert drawn == {m}
        else:
            assert drawn == same_row - {m}, (m, drawn)  # every other frame, uniformly: all seen in 200 draws
    counts = torch.bincount(distractors[0], minlength=8)[1:4].float()
    assert counts.min() > 40  # about 200 / 3 each


def test_diversity_loss_and_perplexity_on_known_distributions():
    uniform = torch.full((2, 4), 0.25)
    assert diversity_loss(uniform).item() == pytest.approx(-2 * math.log(4) / 8)
    assert codebook_perplexity(uniform).item() == pytest.approx(4.0)
    collapsed = F.one_hot(torch.tensor([1, 3]), 4).float()
    assert diversity_loss(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    assert codebook_perplexity(collapsed).item() == pytest.approx(1.0)
    mixed = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])  # perplexities 2 and 4
    assert codebook_perplexity(mixed).item() == pytest.approx(3.0, rel=1e-5)
    assert diversity_loss(mixed).item() == pytest.approx(-(math.log(2) + math.log(4)) / 8, rel=1e-5)


def test_straight_through_gumbel_is_one_hot_with_the_soft_gradient():
    logits = torch.randn(5, 3, 7, requires_grad=True)
    weights = torch.randn(5, 3, 7)
    torch.manual_seed(1)
    hard = straight_through_gumbel(logits, 0.7)
    assert torch.equal(hard.detach().sum(-1), torch.ones(5, 3)) and set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    (hard * weights).sum().backward()
    straight_through = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(1)  # the same Gumbel noise
    uniform = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny, max=1.0 - 1e-7)
    soft = ((logits - torch.log(-torch.log(uniform))) / 0.7).softmax(-1)
    (soft * weights).sum().backward()
    torch.testing.assert_close(straight_through, logits.grad)
    assert straight_through.abs().sum() > 0


def test_quantizer_gradients_reach_features_logits_and_the_chosen_entries():
    torch.manual_seed(0)
    quantizer = GumbelProductQuantizer(input_dim=6, groups=2, entries=5, code_dim=4).train()
    features = torch.randn(9, 6, requires_grad=True)
    result = quantizer(features, 1.0)
    assert result.vectors.shape == (9, 4) and result.codes.shape == (9, 2)
    assert torch.allclose(result.average_probabilities.sum(-1), torch.ones(2))
    (result.vectors.square().sum() + diversity_loss(result.average_probabilities)).backward()
    assert features.grad.abs().sum() > 0 and quantizer.to_logits.weight.grad.abs().sum() > 0
    used = torch.zeros(2, 5, dtype=torch.bool)
    used[torch.arange(2)[None, :].expand(9, 2), result.codes] = True
    entry_grad = quantizer.codebooks.grad.abs().sum(-1)
    assert (entry_grad[used] > 0).all() and (entry_grad[~used] == 0).all()
    quantizer.eval()
    with torch.no_grad():  # without training: the argmax of the logits, no noise
        expected = quantizer.to_logits(features).reshape(9, 2, 5).argmax(-1)
        assert torch.equal(quantizer(features, 1.0).codes, expected)


def _objective(audio_context, **params):
    torch.manual_seed(0)
    encoder = FrameTransformerEncoder(FrameTransformerParams(d_model=32, num_layers=1, strides=[2]), audio_context)
    audio_context.encoder = encoder
    objective = Wav2Vec2Objective(
        Wav2Vec2ObjectiveParams(mask_span=4, mask_start_probability=0.2, **params), audio_context
    )
    return encoder, objective


def test_objective_loss_is_its_terms_and_the_temperature_anneals(audio_context, small_audio):
    encoder, objective = _objective(audio_context, gumbel_temperature_decay=0.5, feature_penalty=0.3)
    batch = small_audio.on_device(small_audio.example_batch(4))
    temperatures = []
    for _ in range(4):
        output = objective([batch], encoder)
        temperatures.append(float(output.metrics["gumbel_temperature"]))
        m = output.metrics
        expected = m["contrastive_loss"] + 0.1 * m["diversity_loss"] + 0.3 * m["feature_penalty"]
        assert output.loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert temperatures == pytest.approx([2.0, 1.0, 0.5, 0.5])  # 2 * 0.5 ** step, never below 0.5
    assert int(objective.state_dict()["updates"]) == 4
    objective.eval()
    objective([batch], encoder)
    assert int(objective.updates) == 4  # evaluation does not advance the clock
    held_out = objective.held_out_metrics(batch, encoder)
    assert held_out == objective.held_out_metrics(batch, encoder)  # fixed masks and distractors
    assert set(held_out) >= {"contrastive_loss", "contrastive_accuracy", "codebook_perplexity"}


def test_quantized_targets_are_the_unmasked_features(audio_context, small_audio):
    """The quantizer reads z at the masked frames before the mask embedding replaced them."""
    encoder, objective = _objective(audio_context)
    batch = small_audio.on_device(small_audio.example_batch(3))
    seen = []
    objective.quantizer.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    torch.manual_seed(5)
    objective.eval()
    objective.terms(batch, encoder)
    torch.manual_seed(5)
    frames = encoder.embed_frames(batch)
    mask = span_mask(frames.shape[0], frames.shape[1], 0.2, 4)
    torch.testing.assert_close(seen[0], frames[mask])


RECIPE = """
name: wav2vec2-check
data: {{modality: audio, source: {{type: default, num_clips: 20}}, duration: 0.5}}
encoder: {{name: {encoder}, d_model: 32, num_layers: 1}}
objectives: [{{name: wav2vec2}}]
train: {{steps: 2, batch_size: 4}}
"""


def test_validation_refuses_an_encoder_without_frame_masking():
    catalog = Catalog.load(["sslhub_audio.plugin"], entry_points=False, python_registrations=False, strict=True)
    recipe = resolve_recipe(load_recipe_text(RECIPE.format(encoder="frame_transformer"), "ok.yaml"), catalog)
    assert recipe.objectives[0].component.name == "wav2vec2"
    with pytest.raises(RecipeError) as error:
        resolve_recipe(load_recipe_text(RECIPE.format(encoder="causal_frame_transformer"), "bad.yaml"), catalog)
    message = str(error.value)
    assert "bad.yaml:5" in message and "objectives[0]" in message
    assert "objective 'wav2vec2' needs an encoder that exposes its frame features" in message
    assert "encoder 'causal_frame_transformer' does not declare provides=['frame_masking']" in message


def test_objective_refuses_a_built_encoder_without_frame_masking(audio_context):
    params = CausalFrameTransformerParams(d_model=32, num_layers=1)
    audio_context.encoder = CausalFrameTransformerEncoder(params, audio_context)
    with pytest.raises(ValueError, match="declares 'frame_masking'"):
        Wav2Vec2Objective(Wav2Vec2ObjectiveParams(), audio_context)


# The shipped recipe, shrunk: a small wav2vec2 encoder (waveform conv feature encoder, 40x subsampling).
TINY = [
    "data.source={type: default, num_clips: 48, num_classes: 4, cache: false}",
    "data.sample_rate=8000",
    "data.duration=0.5",
    "data.features={n_mels: 32, n_fft: 256, hop_length: 80}",
    "encoder.conv_layers=[[32, 10, 5], [32, 4, 4], [32, 2, 2]]",
    "encoder.embed_dim=32",
    "encoder.num_layers=1",
    "encoder.ff_dim=64",
    "objectives.0.num_negatives=5",
    "objectives.0.code_dim=32",
    "objectives.0.final_dim=32",
    "train.batch_size=16",
    "train.device=cpu",
    "train.threads=1",
    "train.log_every=1",
    "export=null",
]


def _run(out: Path, *overrides: str, command: list[str] | None = None) -> subprocess.CompletedProcess:
    arguments = [a for item in (*TINY, *overrides) for a in ("--set", item)]
    run = ["run", str(REPO / "recipes" / "audio_wav2vec2.yaml"), *BLOCKED, "--out", str(out), *arguments]
    if command is None:
        return sslhub(*run)
    env = {**sslhub_env(), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *run], capture_output=True, text=True, env=env, timeout=300)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_it_learns_through_the_sslhub_command(tmp_path):
    out = tmp_path / "run"
    # A log-mel frame transformer learns within a few dozen steps; the waveform encoder needs more.
    encoder = "encoder={name: frame_transformer, d_model: 32, num_layers: 1, num_heads: 2, strides: [2]}"
    result = _run(
        out,
        encoder,
        "train.steps=40",
        "train.optimizer.lr=3e-3",
        "evaluate.knn={k: 5}",
        "evaluate.linear_probe={epochs: 5}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(out)
    losses = [r["wav2vec2/contrastive_loss"] for r in records]
    accuracies = [r["wav2vec2/contrastive_accuracy"] for r in records]
    chance = 1 / 6  # the true target among K = 5 distractors
    # The loss falls fast, then moves with the codebook (more codes in use make the task harder).
    assert sum(losses[-10:]) / 10 < 0.9 * sum(losses[:3]) / 3, losses
    assert sum(accuracies[-10:]) / 10 > max(2 * chance, sum(accuracies[:3]) / 3), accuracies
    assert records[-1]["wav2vec2/gumbel_temperature"] < 2.0
    evaluation = json.loads((out / "evaluation.json").read_text())
    trained, random_init = evaluation["trained"], evaluation["random_init"]
    assert trained["wav2vec2/contrastive_loss"] < 0.8 * random_init["wav2vec2/contrastive_loss"]
    assert trained["wav2vec2/contrastive_accuracy"] > random_init["wav2vec2/contrastive_accuracy"] + 0.1
    assert 1 <= trained["wav2vec2/codebook_perplexity"] <= 32  # V = 32
    assert evaluation["objectives"]["wav2vec2"]["chance_contrastive_accuracy"] == pytest.approx(chance, abs=1e-4)


def test_two_gloo_processes_train_under_torchrun(tmp_path):
    torchrun = torchrun_command()
    result = _run(tmp_path / "ddp", "train.steps=3", "evaluate.enabled=false", command=[*torchrun, "-m", "sslhub"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_records(tmp_path / "ddp")) == 3


def _rank_statistics(rank: int, init_file: str, results: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same quantizer on both ranks, as DDP keeps them
        quantizer = GumbelProductQuantizer(input_dim=6, groups=2, entries=5, code_dim=4).train()
        features = [torch.randn(7, 6), torch.randn(3, 6)]  # a different number of frames per rank
        result = quantizer(features[rank], 1.0)
        result.average_probabilities.sum().backward()
        statistics = torch.cat(
            [
                result.average_probabilities.detach().flatten(),
                codebook_perplexity(result.average_probabilities).detach()[None],
            ]
        )
        gathered = [torch.zeros_like(statistics) for _ in range(2)]
        dist.all_gather(gathered, statistics)
        with torch.no_grad():
            pooled = quantizer.to_logits(torch.cat(features)).reshape(10, 2, 5).softmax(-1).mean(0).flatten()
        results[rank] = (gathered[0].tolist(), gathered[1].tolist(), pooled.tolist())
    finally:
        dist.destroy_process_group()


def test_diversity_statistics_are_averaged_over_all_ranks(tmp_path):
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_rank_statistics, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    for rank in (0, 1):
        first, second, pooled = results[rank]
        assert first == second  # both ranks hold the same p_bar and perplexity
        assert first[:-1] == pytest.approx(pooled, abs=1e-6)  # the mean over all 10 frames, not per rank


@pytest.mark.slow
def test_stopping_and_resuming_gives_the_uninterrupted_weights(tmp_path):
    common = ["evaluate.enabled=false", "train.checkpoint_every=3", "train.schedule=constant", "train.warmup=0"]
    whole = _run(tmp_path / "whole", "train.steps=6", *common)
    assert whole.returncode == 0, whole.stderr[-3000:]
    first = _run(tmp_path / "parts", "train.steps=3", *common)
    assert first.returncode == 0, first.stderr[-3000:]
    rest = sslhub("run", str(REPO / "recipes" / "audio_wav2vec2.yaml"), *BLOCKED, "--resume", str(tmp_path / "parts"),
                  "--set", "train.steps=6")  # fmt: skip
    assert rest.returncode == 0, rest.stderr[-3000:]
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "parts")
    assert a.keys() == b.keys() and any("updates" in key for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"
