"""``sslhub finetune``: a finished run's encoder plus a linear head, trained on labeled data.

The fine-tune writes ``RUN_DIR/finetune/NAME/``:

- ``request.json``: what was asked (``--set``, ``--data``, encoder key), so ``--resume`` repeats it;
- ``checkpoints/`` and ``metrics.jsonl`` of the main fine-tune;
- ``encoder.safetensors`` and ``head.safetensors``: the returned (best) weights;
- ``model/``: the classifier as verified ONNX (:func:`sslhub.export.export_classifier`);
- ``finetune.json``: options, stop decision, validation history, test accuracy and the comparison
  table: fine-tuned from the pretrained encoder vs the same architecture at random init (same
  budget) vs a linear probe of the frozen pretrained features, at several label counts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sslhub.checkpoint import atomic_write_bytes
from sslhub.components import Encoder, EvalSplit, Modality
from sslhub.distributed import is_main_process, world_size
from sslhub.errors import SSLHubError
from sslhub.finetune_compare import ProbeOptions, compare, format_comparison
from sslhub.finetune_data import FinetuneData, LabeledSet, class_names_of, draw_shots, hold_out, labeled_set
from sslhub.finetune_loop import FinetuneLoop, FinetuneOutcome, LoopSettings, score
from sslhub.finetune_model import Classifier
from sslhub.recipe import FinetuneSpec

log = logging.getLogger("sslhub")

REQUEST_FILE = "request.json"
RESULTS_FILE = "finetune.json"


@dataclass
class FinetuneJob:
    """Everything one ``sslhub finetune`` needs, built by the command line from the run.

    Attributes:
        out_dir: ``RUN_DIR/finetune/NAME``.
        spec: the ``finetune:`` options (``precision``/``device``/``compile`` filled in).
        modality: the run's modality.
        encoder: the pretrained encoder (fine-tuned in place).
        encoder_key: its key among the run's encoders.
        split: labeled train and test sides.
        seed: of every draw, split and initialisation.
        build_encoder: the same architecture at its random initialisation (deterministic).
        probe: the linear probe's options (from the run's ``evaluate:``).
        opset: ONNX opset of the export (None: the exporter's default).
        data_source: where the labeled samples come from, for the results.
    """

    out_dir: Path
    spec: FinetuneSpec
    modality: Modality
    encoder: Encoder
    encoder_key: str
    split: EvalSplit
    seed: int
    build_encoder: Callable[[], Encoder]
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    opset: int | None = None
    data_source: str = ""

    @property
    def device(self) -> torch.device:
        from sslhub.building import select_device

        return select_device(self.spec.device or "auto")


def save_request(out_dir: Path, request: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / REQUEST_FILE, json.dumps(request, indent=2, default=str).encode())


def load_request(out_dir: Path) -> dict[str, Any]:
    """The request a fine-tune started with (for ``--resume``)."""
    path = out_dir / REQUEST_FILE
    if not path.is_file():
        raise SSLHubError(
            f"--resume: {out_dir} holds no fine-tune to resume (no {REQUEST_FILE}); start one without --resume"
        )
    try:
        request = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SSLHubError(f"--resume: cannot read {path}: {exc}") from None
    problems = request_problems(request)
    if problems:
        raise SSLHubError(f"--resume: {path} is not a fine-tune request: {'; '.join(problems)}")
    return request


#: the fields of ``request.json`` and the types each may hold.
REQUEST_FIELDS: dict[str, tuple[type, ...]] = {
    "overrides": (list,),
    "data": (str, type(None)),
    "label": (str, type(None)),
    "group": (str, type(None)),
    "test_fraction": (int, float),
    "split_seed": (int,),
    "encoder": (str, type(None)),
}


def request_problems(request: Any) -> list[str]:
    """What is wrong with a saved request (a fine-tune folder is untrusted input, like a run directory)."""
    if not isinstance(request, dict):
        return ["not a JSON object"]
    problems = [
        f"{key}: missing or of the wrong type"
        for key, types in REQUEST_FIELDS.items()
        if key not in request or not isinstance(request[key], types) or isinstance(request[key], bool)
    ]
    overrides = request.get("overrides")
    if isinstance(overrides, list) and not all(isinstance(o, str) and o.startswith("finetune.") for o in overrides):
        problems.append("overrides: each must be a finetune.KEY=VALUE string")
    return problems


def split_sides(split: EvalSplit) -> tuple[LabeledSet, LabeledSet, list[str]]:
    """The labeled train and test sides with their labels, and the class names."""
    train, test = labeled_set(split.train), labeled_set(split.test)
    if len(train) == 0 or len(test) == 0:
        raise SSLHubError(f"the labeled split has {len(train)} train and {len(test)} test samples; it needs both")
    return train, test, class_names_of(split, train, test)


def prepare_data(
    train: LabeledSet, test: LabeledSet, class_names: list[str], spec: FinetuneSpec, shots: int | None, seed: int
) -> FinetuneData:
    """``shots`` per class of ``train`` (seeded), a validation share of them, and the test side."""
    drawn = draw_shots(train, shots, seed)
    kept, validation = hold_out(drawn, spec.validation_fraction, seed)
    return FinetuneData(kept, validation, test, class_names)


def fine_tune(
    encoder: Encoder, data: FinetuneData, job: FinetuneJob, seed: int, out_dir: Path | None = None, resume: bool = False
) -> tuple[Classifier, FinetuneOutcome, dict[str, float]]:
    """Fine-tune ``encoder`` with a new head; return the classifier, how it went and its test scores.

    ``out_dir``: write checkpoints and ``metrics.jsonl`` there (the main fine-tune; resumable).
    """
    device = job.device
    torch.manual_seed(seed)  # the head's initialisation
    classifier = Classifier(encoder.to(device), data.num_classes, frozen=job.spec.mode == "frozen").to(device)
    settings = LoopSettings(
        seed=seed,
        device=device,
        precision=job.spec.precision or "fp32",
        compile=bool(job.spec.compile),
        checkpoints=out_dir / "checkpoints" if out_dir else None,
        metrics_file=out_dir / "metrics.jsonl" if out_dir else None,
    )
    loop = FinetuneLoop(classifier, data, job.modality, job.spec, settings)
    outcome = loop.run(resume=resume)
    test = score(classifier, data.test, job.modality, settings, job.spec.batch_size * 4)
    return classifier, outcome, test


def run_finetune(job: FinetuneJob, resume: bool = False) -> dict[str, Any]:
    """The main fine-tune, its files, the export and the comparison table; returns ``finetune.json``."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    pretrained = {k: v.detach().clone() for k, v in job.encoder.state_dict().items()}
    train, test, class_names = split_sides(job.split)
    data = prepare_data(train, test, class_names, job.spec, job.spec.shots, job.seed)
    log.info(
        "fine-tuning encoder '%s' (%s) on %d labeled samples (%d for validation), %d classes",
        job.encoder_key,
        job.spec.mode,
        len(data.train) + (len(data.validation) if data.validation else 0),
        len(data.validation) if data.validation else 0,
        data.num_classes,
    )
    classifier, outcome, test_scores = fine_tune(job.encoder, data, job, job.seed, job.out_dir, resume)
    results = results_of(job, data, outcome, test_scores)
    if is_main_process():  # under torchrun, rank 0 writes; every rank takes part in the fine-tunes
        save_weights(job.out_dir, classifier)
        results["export"] = export_model(job, classifier, class_names)
    if job.spec.compare is not None:
        main_row = {"shots": job.spec.shots, "test_accuracy": test_scores["accuracy"]}
        results["comparison"] = compare(job, pretrained, train, test, class_names, main_row)
    if is_main_process():
        write_results(job.out_dir, results)
    return results


def results_of(
    job: FinetuneJob, data: FinetuneData, outcome: FinetuneOutcome, test_scores: dict[str, float]
) -> dict[str, Any]:
    """The ``finetune.json`` fields of the main fine-tune (contract: run_dir, encoder_key, class_names)."""
    monitor = job.spec.early_stopping.monitor if job.spec.early_stopping else None
    return {
        "run_dir": "../..",
        "encoder_key": job.encoder_key,
        "class_names": data.class_names,
        "options": options_used(job),
        "data": {
            "source": job.data_source or "the run's labeled split",
            "shots": job.spec.shots,
            "train": len(data.train),
            "validation": len(data.validation) if data.validation else 0,
            "test": len(data.test),
        },
        "steps": outcome.steps,
        "world_size": world_size(),
        "early_stopping": {
            "monitor": monitor,
            "stopped": outcome.stopped,
            "best_step": outcome.best_step,
            "best_value": outcome.best_value,
            "restored_best": outcome.restored_best,
        },
        "validation_history": outcome.history,
        "test_accuracy": test_scores["accuracy"],
        "test_loss": test_scores["loss"],
        "files": {"encoder": "encoder.safetensors", "head": "head.safetensors", "model": "model"},
    }


def options_used(job: FinetuneJob) -> dict[str, Any]:
    """The ``finetune:`` options as used: the optimizer's own options, the seed resolved."""
    options = job.spec.model_dump(mode="json")
    options["optimizer"] = job.spec.optimizer.options_dict()
    options["seed"] = job.seed
    return options


def _cpu_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    # clone: safetensors refuses tensors that share memory (tied weights).
    return {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}


def save_weights(out_dir: Path, classifier: Classifier) -> None:
    """``encoder.safetensors`` and ``head.safetensors`` (``weight [C, D]``, ``bias [C]``), written atomically."""
    from safetensors.torch import save

    for name, module in (("encoder", classifier.encoder), ("head", classifier.head)):
        atomic_write_bytes(out_dir / f"{name}.safetensors", save(_cpu_tensors(module.state_dict())))


def export_model(job: FinetuneJob, classifier: Classifier, class_names: list[str]) -> dict[str, Any]:
    """The classifier as verified ONNX in ``model/`` (:func:`sslhub.export.export_classifier`)."""
    from sslhub.export import export_classifier

    encoder = classifier.encoder.cpu().eval()
    head = classifier.head.cpu().eval()
    try:
        report = export_classifier(encoder, head, job.modality, class_names, job.out_dir / "model", opset=job.opset)
    except SSLHubError as exc:  # the weights are saved: say why there is no ONNX file, and carry on
        log.warning("the classifier was not exported: %s", exc)
        return {"failed": str(exc)}
    if not report.get("passed", False):
        log.warning("classifier export did not verify: %s", report.get("summary"))
    return {key: value for key, value in report.items() if isinstance(value, str | int | float | bool)}


def write_results(out_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_bytes(out_dir / RESULTS_FILE, json.dumps(results, indent=2, default=str).encode())


def format_results(results: dict[str, Any]) -> str:
    """The end-of-command text: steps, stop decision, test accuracy, and the comparison table."""
    stop = results["early_stopping"]
    lines = [f"fine-tuned {results['steps']} steps; test accuracy {results['test_accuracy']:.4f}"]
    if stop["stopped"]:
        lines.append(f"stopped early at step {stop['stopped']['step']}: {stop['stopped']['reason']}")
    if stop["best_step"] is not None:
        restored = "restored" if stop["restored_best"] else "not restored"
        lines.append(f"best {stop['monitor']} {stop['best_value']:.4f} at step {stop['best_step']} ({restored})")
    if results.get("comparison"):
        lines += format_comparison(results["comparison"])
    export = results.get("export", {})
    if "skipped" in export or "failed" in export:
        lines.append(f"note: {export.get('skipped') or 'the classifier was not exported: ' + export['failed']}")
    elif export:
        lines.append(f"ONNX classifier: {export.get('summary', 'written')}")
    return "\n".join(lines)
