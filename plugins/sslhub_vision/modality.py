"""The ``image`` modality: images as uint8 ``[C, S, S]`` on the CPU, float ``[0, 1]`` on the device.

Normalisation (``mean``/``std``) is **not** applied here: image encoders of this plugin
apply it inside the model, so augmentations work in the natural ``[0, 1]`` range and the
exported ONNX model takes plain ``[0, 1]`` RGB images. ``input_spec()`` records this as
``preprocessing.normalization = "inside_model"`` together with the constants.

Samples:
    ``{"image": uint8 [C, S, S]}``, plus ``"label"`` (int64 scalar) on the eval split.
Batches after :meth:`ImageModality.on_device`:
    ``{"image": float32 [B, C, S, S] in [0, 1]}``.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor
from torch.utils.data import Dataset

from sslhub import (
    Batch,
    BuildContext,
    EvalSplit,
    GroupPattern,
    Modality,
    ModalityInfo,
    Params,
    folder_classes,
    folder_fingerprint,
    holdout_split,
    list_files,
    path_group_problems,
    path_problems,
    split_by_path_groups,
)
from sslhub_vision import sources

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: at most this many values (channels x side x side) in the raw-pixel baseline, so probes stay cheap.
RAW_PIXEL_BUDGET = 1024


class DefaultSource(Params):
    """The embedded data set: scikit-learn's 1797 handwritten digits (8x8, 10 classes)."""

    type: Literal["default"] = "default"


class FolderSource(Params):
    """Image files in nested folders; the first-level subfolder of each file is its class."""

    type: Literal["folder"] = "folder"
    path: Path = Field(description="root folder, searched recursively")
    extensions: list[str] = Field(
        default_factory=lambda: list(sources.DEFAULT_EXTENSIONS),
        min_length=1,
        description="file extensions to read (case-insensitive)",
    )
    group_pattern: GroupPattern = Field(
        None,
        description="regex over each file's path relative to path; its (?P<group>...) (or first group) names the "
        "file's group (a source, a camera): the labeled split keeps groups apart, test groups unseen",
    )

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """A missing or imageless folder; a group pattern leaving a file without a group; a class without probe-train samples."""
        missing = path_problems(self.path, "folder", self.extensions)
        if missing or self.group_pattern is None or test_fraction is None:
            return missing
        root = self.path.expanduser()  # path_problems found a folder there
        paths = list_files(root, self.extensions)
        labels, class_names = folder_classes(root, paths)
        relative = [p.relative_to(root).as_posix() for p in paths]
        return path_group_problems(
            relative,
            labels,
            class_names,
            self.group_pattern,
            str(root),
            test_fraction,
            seed,
            min_train_per_class=min_train_per_class,
        )


class NumpySource(Params):
    """An ``.npz`` file with ``images`` (uint8 [N, H, W, C]) and optionally ``labels`` ([N])."""

    type: Literal["numpy"] = "numpy"
    path: Path = Field(description="path of the .npz file")

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """A missing or empty file."""
        return path_problems(self.path, "file")


ImageSource = Annotated[DefaultSource | FolderSource | NumpySource, Field(discriminator="type")]


class ImageParams(Params):
    """Parameters of the ``image`` modality (everything under the recipe's ``data:`` but ``modality``)."""

    source: ImageSource = Field(
        default_factory=DefaultSource, description="where images come from: type default | folder | numpy"
    )
    image_size: int = Field(32, ge=8, le=2048, description="side length S images are resized/cropped to")
    channels: Literal[1, 3] = Field(3, description="3 for RGB (gray images are replicated), 1 for gray")
    eval_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="share of labeled images held out as the eval test split"
    )
    split_seed: int = Field(0, description="seed of the deterministic train/test split")
    mean: tuple[float, ...] | None = Field(
        None, description="per-channel normalisation mean, applied inside the encoder; default ImageNet's"
    )
    std: tuple[float, ...] | None = Field(
        None, description="per-channel normalisation std, applied inside the encoder; default ImageNet's"
    )

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """The source's problems with this recipe's ``eval_fraction`` and ``split_seed``."""
        problems = self.source.file_problems(self.eval_fraction, self.split_seed, min_train_per_class)
        return [(("source", *path), message) for path, message in problems]

    @model_validator(mode="after")
    def _check_constants(self) -> ImageParams:
        if isinstance(self.source, FolderSource) and self.source.group_pattern and self.eval_fraction == 0:
            raise ValueError("source.group_pattern groups the labeled split, so eval_fraction must be above 0")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) not in (1, self.channels):
                raise ValueError(f"{name} must have 1 or channels={self.channels} values, got {len(value)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {list(self.std)}")
        return self

    def resolved_mean(self) -> tuple[float, ...]:
        return _resolve(self.mean, IMAGENET_MEAN, self.channels)

    def resolved_std(self) -> tuple[float, ...]:
        return _resolve(self.std, IMAGENET_STD, self.channels)


def _resolve(value: tuple[float, ...] | None, default: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if value is None:
        # for gray images, the average of the RGB constants
        return default if channels == 3 else (float(np.mean(default)),)
    return tuple(value) * channels if len(value) == 1 else tuple(value)


class _Unlabeled(Dataset):
    """View of a labeled dataset without the ``label`` key."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v for k, v in self.dataset[index].items() if k != "label"}


class ImageModality(Modality):
    """Images from the embedded digits, a folder tree or an ``.npz`` file, decoded to uint8 on the CPU.

    The data are split once, deterministically (``split_seed``): ``train_dataset`` is the
    training part (labels dropped), ``eval_split`` pairs the same training images with
    labels against the ``eval_fraction`` held out (stratified by class).
    """

    input_names = ("image",)

    def __init__(self, params: ImageParams | None = None, context: BuildContext | None = None):
        self.params = params or ImageParams()
        self.context = context

    @property
    def image_size(self) -> int:
        return self.params.image_size

    @property
    def channels(self) -> int:
        return self.params.channels

    @property
    def mean(self) -> tuple[float, ...]:
        return self.params.resolved_mean()

    @property
    def std(self) -> tuple[float, ...]:
        return self.params.resolved_std()

    @cached_property
    def _data(self) -> dict[str, Any]:
        """Load (or scan) the recipe's source once: a dataset factory over indices, labels and splits."""
        data = self._load(self.params.source)
        fraction = self.params.eval_fraction if data["labels"] is not None else 0.0
        return {**data, **self._split(data, self.params.source, fraction, self.params.split_seed)}

    def _load(self, source: ImageSource) -> dict[str, Any]:
        """Scan or read ``source``: a dataset factory over indices, labels, class names, relative paths."""
        size, channels = self.params.image_size, self.params.channels
        if isinstance(source, FolderSource):
            root = source.path.expanduser()
            paths, labels, class_names, skipped = sources.scan_image_folder(root, source.extensions)

            def make(indices: np.ndarray, with_labels: bool) -> Dataset:
                chosen = [paths[i] for i in indices]
                chosen_labels = [labels[i] for i in indices] if (with_labels and labels is not None) else None
                return sources.FolderImageDataset(chosen, size, channels, chosen_labels)

            return {
                "make": make,
                "labels": labels,
                "class_names": class_names,
                "count": len(paths),
                "relative": [p.relative_to(root).as_posix() for p in paths],
                "fingerprint": f"folder:{root}:{len(paths)}:{folder_fingerprint(root, paths)}",
                "skipped": len(skipped),
            }
        if isinstance(source, NumpySource):
            images, labels, class_names = sources.load_npz(source.path.expanduser())
            stat = source.path.expanduser().stat()
            fingerprint = f"numpy:{source.path}:{images.shape[0]}:{stat.st_size}"
        else:
            images, labels, class_names = sources.load_digits_array(size, channels)
            fingerprint = f"sklearn-digits:{images.shape[0]}"

        def make_array(indices: np.ndarray, with_labels: bool) -> Dataset:
            return sources.ArrayImageDataset(images, indices, size, channels, labels if with_labels else None)

        count = images.shape[0]
        return {
            "make": make_array,
            "labels": labels,
            "class_names": class_names,
            "count": count,
            "fingerprint": fingerprint,
            "skipped": 0,
        }

    @staticmethod
    def _split(data: dict[str, Any], source: ImageSource, fraction: float, seed: int) -> dict[str, Any]:
        """``train``/``test`` indices (grouped when the source has a ``group_pattern``) and group counts."""
        pattern = getattr(source, "group_pattern", None)
        if pattern is None or fraction == 0:
            train, test = holdout_split(data["count"], data["labels"], fraction, seed)
            return {"train": train, "test": test, "groups": None}
        root = str(source.path.expanduser())
        split = split_by_path_groups(
            data["relative"], data["labels"], data["class_names"], pattern, root, fraction, seed
        )
        return {"train": np.asarray(split.train), "test": np.asarray(split.test), "groups": split.group_counts()}

    def prepare(self, run_dir: Path | None) -> None:
        """Scan or load the source now, so errors and skipped-file warnings come before training."""
        self._data  # noqa: B018 - computed for its side effects

    def train_dataset(self) -> Dataset:
        """Training images ``{"image": uint8 [C, S, S]}`` (the held-out test images excluded)."""
        data = self._data
        return data["make"](data["train"], False)

    def eval_split(self) -> EvalSplit | None:
        """Labeled training images vs the held-out ``eval_fraction``; ``None`` without labels."""
        data = self._data
        if data["labels"] is None or len(data["test"]) == 0:
            return None
        return self._eval_split(data)

    @staticmethod
    def _eval_split(data: dict[str, Any], source: str = "") -> EvalSplit:
        return EvalSplit(
            train=data["make"](data["train"], True),
            test=data["make"](data["test"], True),
            class_names=tuple(data["class_names"]),
            groups=data["groups"],
            source=source,
        )

    def labeled_split(self, source: Params, test_fraction: float, seed: int) -> EvalSplit:
        """A labeled folder or ``.npz`` decoded like the training images, split by groups when it has a pattern."""
        if isinstance(source, DefaultSource) or not isinstance(source, FolderSource | NumpySource):
            raise ValueError("an image evaluation source must be a labeled folder or .npz file, not the default digits")
        data = self._load(source)
        if data["labels"] is None:
            raise ValueError(f"image evaluation source {source.path} has no labels")
        data.update(self._split(data, source, test_fraction, seed))
        return self._eval_split(data, str(source.path))

    def labeled_source(self, path: Path, label: str | None = None, group: str | None = None) -> dict[str, Any]:
        """A folder (class subfolders; ``group`` is a group pattern) or a labeled ``.npz``."""
        if label is not None:
            raise ValueError(
                "image sources take labels from class subfolders or the .npz 'labels'; --label does not apply"
            )
        if path.is_dir():
            return {"type": "folder", "path": str(path), "group_pattern": group}
        if path.suffix == ".npz" and group is None:
            return {"type": "numpy", "path": str(path)}
        if path.suffix == ".npz":
            raise ValueError("an .npz image source has no group option; use a folder with --group PATTERN")
        raise ValueError(f"{path}: give a folder of class subfolders or a labeled .npz file")

    def held_out_dataset(self) -> Dataset | None:
        """The eval test images without labels, for objective metrics (reconstruction error)."""
        data = self._data
        if len(data["test"]) == 0:
            return None
        return _Unlabeled(data["make"](data["test"], False))

    def on_device(self, batch: Batch) -> Batch:
        """uint8 ``[B, C, S, S]`` -> float32 ``[0, 1]``; other keys pass through."""
        image = batch["image"]
        if image.dtype == torch.uint8:
            image = image.float().div_(255.0)
        return {**batch, "image": image}

    def raw_features(self, batch: Batch) -> Tensor:
        """The raw-input baseline: pixels area-averaged down to at most ``RAW_PIXEL_BUDGET`` values.

        Normalised with the modality's fixed ``mean``/``std`` (nothing fitted), flattened.

        Args:
            batch: ``{"image": float [B, C, S, S] in [0, 1]}``.

        Returns:
            float32 ``[B, C * s * s]`` with ``s = min(S, isqrt(RAW_PIXEL_BUDGET // C))``.
        """
        return downsampled_pixels(batch["image"], self.mean, self.std)

    def augmentation_samples(self, batch: Batch, views: list[Batch]) -> dict[str, Tensor | str]:
        """``{"views": uint8 [H, W, 3]}``: one row per image, the image then each of its views.

        Args:
            batch: ``{"image": float [n, C, S, S] in [0, 1]}``; views: the same, augmented
                (a view of another size is resized to ``S``).
        """
        rows = []
        for index in range(batch["image"].shape[0]):
            tiles = [batch["image"][index]] + [view["image"][index] for view in views if "image" in view]
            size = tiles[0].shape[-2:]
            tiles = [t if t.shape[-2:] == size else F.interpolate(t[None].float(), size=size)[0] for t in tiles]
            rows.append(torch.cat([F.pad(t.float(), (2, 2, 2, 2), value=1.0) for t in tiles], dim=-1))
        grid = torch.cat(rows, dim=-2).clamp(0, 1)
        if grid.shape[0] == 1:
            grid = grid.expand(3, -1, -1)
        return {"views": (grid[:3] * 255).round().to(torch.uint8).permute(1, 2, 0).cpu()}

    def part_dataset(self, items: Any) -> Dataset:
        """As a composite's part: ``{"image": uint8 [C, S, S]}`` per item, resized and adapted like
        this modality's own images.

        Args:
            items: image file paths (decoded on access; an unreadable file raises), or pixel
                arrays in ``0..255`` (uint8 or float), one ``[H, W(, c)]`` per image or stacked
                ``[N, H, W(, c)]``; equally sized arrays are resized once, in one batched call.
        """
        return sources.part_images(items, self.params.image_size, self.params.channels)

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """Random float ``[B, C, S, S]`` images in ``[0, 1]``, shaped like encoder input."""
        size, channels = self.params.image_size, self.params.channels
        return {"image": torch.rand(batch_size, channels, size, size, device=device)}

    def info(self) -> ModalityInfo:
        """``channels``, ``image_size``, the normalisation constants encoders apply and ``value_range`` [0, 1]."""
        return ModalityInfo(
            channels=self.params.channels,
            image_size=self.params.image_size,
            mean=list(self.mean),
            std=list(self.std),
            value_range=[0.0, 1.0],
        )

    def input_spec(self) -> dict[str, Any]:
        """ONNX input ``image`` float32 ``[batch, C, S, S]`` in ``[0, 1]``; normalisation inside the model."""
        size, channels = self.params.image_size, self.params.channels
        return {
            "inputs": {"image": {"dtype": "float32", "shape": ["batch", channels, size, size]}},
            "dynamic_axes": {"image": {0: "batch"}},
            "preprocessing": {
                "image_size": size,
                "channels": channels,
                "color": "RGB" if channels == 3 else "L",
                "layout": "NCHW",
                "value_range": [0.0, 1.0],
                "scale": "pixel / 255",
                "resize": "shorter side to image_size (bilinear, antialiased), then center crop",
                "mean": list(self.mean),
                "std": list(self.std),
                "normalization": "inside_model",
                "note": "feed RGB pixels divided by 255; the model subtracts mean and divides by std itself",
            },
        }

    def fingerprint(self) -> str:
        return self._data["fingerprint"]


def downsampled_pixels(image: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``[B, C, S, S]`` images -> normalised, area-downsampled pixels ``[B, C * s * s]`` (see ``raw_features``)."""
    channels, size = image.shape[1], image.shape[-1]
    side = min(size, max(1, math.isqrt(RAW_PIXEL_BUDGET // channels)))
    small = F.adaptive_avg_pool2d(image.float(), side)
    shift = torch.tensor(mean, device=image.device).view(1, -1, 1, 1)
    scale = torch.tensor(std, device=image.device).view(1, -1, 1, 1)
    return ((small - shift) / scale).flatten(1)
