"""What a run does at its end for the report: draw augmentation samples, then write ``report.html``.

Imported by the engine only when ``report.enabled``, after the summary is written; nothing
here may fail the run (a problem is a warning and the run's results stand).
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from sslhub.components import Modality

log = logging.getLogger("sslhub")

AUGMENTATION_FOLDER = "augmentation_samples"
_SAMPLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def write_report_at_run_end(
    run_dir: Path, modality: Modality, augment: nn.Module, dataset: Dataset, device: torch.device
) -> Path | None:
    """Write the augmentation samples and ``run_dir/report.html``; warn, never raise, on a problem."""
    try:
        write_augmentation_samples(run_dir, modality, augment, dataset, device)
    except Exception as exc:  # noqa: BLE001 - a picture must never fail a finished run
        log.warning("no augmentation samples for the report (%s): %s", type(modality).__name__, _first_line(exc))
    try:
        from sslhub.report import write_report

        path = write_report([run_dir], run_dir / "report.html")
    except Exception as exc:  # noqa: BLE001 - the report is a view of results that are already saved
        log.warning(
            "could not write the run report: %s; retry with 'sslhub --debug report %s'", _first_line(exc), run_dir
        )
        return None
    log.info("report: %s", path)
    return path


@torch.no_grad()
def write_augmentation_samples(
    run_dir: Path,
    modality: Modality,
    augment: nn.Module,
    dataset: Dataset,
    device: torch.device,
    samples: int = 4,
    views: int = 3,
) -> list[Path]:
    """Apply ``augment`` ``views`` times to the first ``samples`` training samples; write what
    :meth:`Modality.augmentation_samples` makes of them under ``run_dir/augmentation_samples/``.

    The draws use their own seed (the global RNG is left as it was), so two runs of a recipe
    show the same samples.
    """
    count = min(samples, len(dataset))  # type: ignore[arg-type]
    if count == 0:
        return []
    batch = modality.collate([dataset[index] for index in range(count)])
    batch = modality.on_device({k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()})
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        drawn = [augment(dict(batch)) for _ in range(views)]
    written = []
    folder = Path(run_dir) / AUGMENTATION_FOLDER
    for name, value in modality.augmentation_samples(batch, drawn).items():
        if not _SAMPLE_NAME.match(name):
            raise ValueError(f"augmentation sample name {name!r} is not a plain file name (letters, digits, _.-)")
        folder.mkdir(exist_ok=True)
        if isinstance(value, str):
            path = folder / f"{name}.txt"
            path.write_text(value, encoding="utf-8")
        else:
            path = folder / f"{name}.png"
            path.write_bytes(png_bytes(value, f"{type(modality).__name__}.augmentation_samples()[{name!r}]"))
        written.append(path)
    return written


def png_bytes(picture: Tensor, what: str) -> bytes:
    """PNG of a uint8 ``[H, W]`` or ``[H, W, C]`` (C in 1, 3, 4) picture; ``what`` names it in an error."""
    from PIL import Image

    is_picture = (
        isinstance(picture, Tensor)
        and picture.dtype == torch.uint8
        and (picture.dim() == 2 or (picture.dim() == 3 and picture.shape[-1] in (1, 3, 4)))
    )
    if not is_picture:
        shape = tuple(picture.shape) if isinstance(picture, Tensor) else type(picture).__name__
        raise ValueError(f"{what} is {shape}; a picture must be uint8 [H, W] or [H, W, 3]")
    array: np.ndarray = picture.detach().cpu().numpy()
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
