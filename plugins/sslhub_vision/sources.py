"""Where images come from: the embedded digits, a folder tree, or an ``.npz`` array file.

Each source yields map-style datasets of ``{"image": uint8 [C, S, S]}`` samples (plus an
int64 ``"label"`` on labeled splits), decoded on the CPU one sample at a time. Decoding
is deterministic per index (no randomness: augmentations run later, batched on the device),
and every dataset is picklable so DataLoader workers can use it.

Resizing is "shorter side to ``image_size``, then centre crop", so non-square images keep
their aspect ratio; the same rule is written into the export metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from sslhub import UnreadableFiles, folder_classes, list_files

logger = logging.getLogger("sslhub")

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: how many skipped paths a warning names before it only counts them.
NAMED_SKIPS = 5

#: transparent pixels are composited on this colour (white, as viewers show most images) before use.
ALPHA_BACKGROUND = (255, 255, 255)


def adapt_channels(image: Tensor, channels: int) -> Tensor:
    """Convert ``image`` ([c, H, W] or a batch [N, c, H, W], any c in 1..4) to ``channels`` channels.

    Gray becomes RGB by replication, RGB becomes gray with the ITU-R 601 luma weights
    (the ones torchvision uses), and an alpha channel is dropped.
    """
    c = image.shape[-3]
    if c == 4:
        image, c = image[..., :3, :, :], 3
    elif c == 2:  # gray + alpha
        image, c = image[..., :1, :, :], 1
    if c == channels:
        return image
    if c == 1 and channels == 3:
        return image.expand(*image.shape[:-3], 3, -1, -1).clone()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.2989, 0.587, 0.114], dtype=torch.float32).view(3, 1, 1)
        gray = (image.float() * weights).sum(-3, keepdim=True)
        return gray.round().clamp(0, 255).to(image.dtype)
    raise ValueError(f"cannot convert an image with {c} channels to {channels} channels")


def resize_center_crop(image: Tensor, size: int) -> Tensor:
    """Resize ``image`` (uint8 [C, H, W] or a batch [N, C, H, W]) so its shorter side is ``size``, then centre-crop a square.

    Returns:
        uint8 ``[C, size, size]`` (``[N, C, size, size]`` for a batch).
    """
    height, width = image.shape[-2:]
    if height == size and width == size:
        return image
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        batch = image.float() if image.dim() == 4 else image[None].float()
        # antialias only matters when shrinking; it is a no-op for the upsampled digits.
        resized = F.interpolate(batch, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        resized = resized if image.dim() == 4 else resized[0]
        image = resized.round().clamp(0, 255).to(torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[..., top : top + size, left : left + size].contiguous()


class ArrayImageDataset(Dataset):
    """Images held in memory as a numpy array, returned resized to ``image_size``.

    Args:
        images: uint8 ``[N, H, W, c]`` (c in 1, 3, 4) or ``[N, H, W]``.
        indices: which rows of ``images`` this dataset exposes, in order.
        image_size: output side length ``S``.
        channels: output channels ``C`` (1 or 3).
        labels: int64 ``[N]`` class indices; given, samples carry ``"label"``.
    """

    def __init__(
        self,
        images: np.ndarray,
        indices: Sequence[int],
        image_size: int,
        channels: int,
        labels: np.ndarray | None = None,
    ):
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        self.image_size = image_size
        self.channels = channels
        self.labels = labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Tensor]]:
        """Samples ``indices`` made in one batched pass (the DataLoader's path for a whole batch).

        One fancy index, one channel conversion and one resize for the batch, rather than a
        Python round per sample: at batch 512 the per-sample path was most of the host's
        loading time.
        """
        rows = self.indices[np.asarray(indices, dtype=np.int64)]
        array = self.images[rows]
        if array.ndim == 3:
            array = array[..., None]
        images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
        images = resize_center_crop(adapt_channels(images, self.channels), self.image_size).contiguous()
        samples = [{"image": image} for image in images.unbind(0)]
        if self.labels is not None:
            for sample, label in zip(
                samples, torch.from_numpy(self.labels[rows].astype(np.int64)).unbind(0), strict=True
            ):
                sample["label"] = label
        return samples


class FolderImageDataset(Dataset):
    """Image files decoded with Pillow on access.

    A file that passed the scan but still fails to decode (truncated data) is replaced by
    the next decodable file in order, deterministically, and a warning names it; training
    never stops for one bad file, but gives up naming the files once more than
    ``sslhub.unreadable.MAX_UNREADABLE_SHARE`` of them failed (see :class:`sslhub.UnreadableFiles`).

    Args:
        paths: image files.
        image_size: output side length ``S``.
        channels: output channels ``C`` (1 or 3).
        labels: int64 class index per path; given, samples carry ``"label"``.
    """

    def __init__(self, paths: Sequence[Path], image_size: int, channels: int, labels: Sequence[int] | None = None):
        self.paths = [str(p) for p in paths]
        self.image_size = image_size
        self.channels = channels
        self.labels = None if labels is None else [int(x) for x in labels]
        self.unreadable = UnreadableFiles(len(self.paths), "image")

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, path: str) -> Tensor:
        """Decode one file to uint8 ``[C, S, S]`` (16-bit scaled, transparency on :data:`ALPHA_BACKGROUND`)."""
        with Image.open(path) as img:
            array = to_uint8_array(img, self.channels)
        if array.ndim == 2:
            array = array[:, :, None]
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
        return resize_center_crop(image, self.image_size)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        current, image = self.unreadable.read(index, self.paths.__getitem__, lambda i: self.decode(self.paths[i]))
        sample = {"image": image}
        if self.labels is not None:
            sample["label"] = torch.tensor(self.labels[current], dtype=torch.int64)
        return sample


def to_uint8_array(img: Image.Image, channels: int) -> np.ndarray:
    """An opened image as uint8 ``[H, W]`` (``channels`` 1) or ``[H, W, 3]``.

    16-bit images are scaled to 8 bits (Pillow's own conversion clips them, which turned almost
    every pixel white); transparent images are composited on :data:`ALPHA_BACKGROUND` (Pillow's
    conversion drops alpha, which showed whatever colour hid under transparent pixels).
    """
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # "I" is how Pillow opens 16-bit grayscale PNGs and TIFFs; their range is 0..65535.
        wide = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)


def load_digits_array(image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's bundled 8x8 handwritten digits (no download), upsampled once, as uint8 images.

    The whole set (1797 images) is resized in one batched call at load time, so per-sample
    decoding is only indexing.

    Returns:
        images uint8 ``[1797, S, S, C]`` (0..16 scaled to 0..255, bilinear upsampling, gray
        replicated to ``C`` channels), labels int64 ``[1797]``, class names ``"0".."9"``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images * (255.0 / 16.0)).float()[:, None]  # [N, 1, 8, 8]
    resized = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    images = resized.round().clamp(0, 255).to(torch.uint8).expand(-1, channels, -1, -1)
    return images.permute(0, 2, 3, 1).contiguous().numpy(), digits.target.astype(np.int64), [str(i) for i in range(10)]


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read ``images`` (uint8 ``[N, H, W, C]``) and optional ``labels`` (``[N]``) from an ``.npz``.

    Labels of any integer or string values are mapped to contiguous class indices in sorted
    order; the original values become the class names.
    """
    if not path.is_file():
        raise ValueError(f"numpy source: file {path} does not exist")
    with np.load(path, allow_pickle=False) as archive:
        if "images" not in archive.files:
            raise ValueError(f"numpy source {path}: no 'images' array (found: {', '.join(archive.files) or 'none'})")
        images = archive["images"]
        raw_labels = archive["labels"] if "labels" in archive.files else None
    if images.dtype != np.uint8:
        raise ValueError(f"numpy source {path}: 'images' must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"numpy source {path}: 'images' must be [N, H, W, C] with C in 1, 3, 4; got {images.shape}")
    if raw_labels is None:
        return images, None, []
    if raw_labels.shape != (images.shape[0],):
        raise ValueError(
            f"numpy source {path}: 'labels' must have shape [{images.shape[0]}], got {list(raw_labels.shape)}"
        )
    classes, labels = np.unique(raw_labels, return_inverse=True)
    return images, labels.astype(np.int64), [str(c) for c in classes]


def scan_image_folder(
    root: Path, extensions: Sequence[str]
) -> tuple[list[Path], list[int] | None, list[str], list[Path]]:
    """Find readable images under ``root`` (recursively); first-level subfolders name the classes.

    Each file's header is checked with Pillow (``Image.verify``) so obviously corrupt or
    non-image files are skipped up front; they are counted and the first few are named in
    a warning on the ``sslhub`` logger.

    Returns:
        paths (sorted), labels (class index per path, or ``None`` when some image lies
        directly in ``root``), class names, and the skipped paths.
    """
    candidates = list_files(root, extensions)
    paths: list[Path] = []
    skipped: list[Path] = []
    for path in candidates:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception:  # noqa: BLE001 - Pillow raises many kinds for bad files; all mean "skip"
            skipped.append(path)
            continue
        paths.append(path)
    if skipped:
        named = ", ".join(str(p) for p in skipped[:NAMED_SKIPS])
        more = f" and {len(skipped) - NAMED_SKIPS} more" if len(skipped) > NAMED_SKIPS else ""
        logger.warning("skipped %d unreadable image file(s) under %s: %s%s", len(skipped), root, named, more)
    if not paths:
        raise ValueError(
            f"folder source: no readable images with extensions {sorted({e.lower() if e.startswith('.') else f'.{e.lower()}' for e in extensions})} under {root}"
            + (f" ({len(skipped)} unreadable)" if skipped else "")
        )
    labels, class_names = folder_classes(root, paths)
    return paths, labels, class_names, skipped


def resize_stack(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """Equally sized images resized in one batched call, as the embedded digits are.

    Args:
        images: ``[N, H, W]`` or ``[N, H, W, c]`` pixel values in ``0..255``, uint8 or float
            (a float stack is interpolated before rounding, so it is rounded once).

    Returns:
        uint8 ``[N, S, S, C]`` (shorter side to ``S``, centre crop; channels adapted).
    """
    stack = torch.from_numpy(np.ascontiguousarray(images)).float()
    stack = stack[:, None] if stack.dim() == 3 else stack.permute(0, 3, 1, 2)
    height, width = stack.shape[-2:]
    scale = image_size / min(height, width)
    new_h, new_w = max(image_size, round(height * scale)), max(image_size, round(width * scale))
    if (new_h, new_w) != (height, width):
        stack = F.interpolate(stack, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    stack = stack[:, :, top : top + image_size, left : left + image_size]
    uint8 = stack.round().clamp(0, 255).to(torch.uint8)
    adapted = torch.stack([adapt_channels(image, channels) for image in uint8]) if len(uint8) else uint8
    return adapted.permute(0, 2, 3, 1).contiguous().numpy()


class StrictImageFiles(Dataset):
    """``{"image": uint8 [C, S, S]}`` per image file; a file that fails to decode raises (no replacement).

    What the ``image`` modality gives a composite modality (:meth:`ImageModality.part_dataset`),
    which replaces a whole pair when one of its files is unreadable.
    """

    def __init__(self, paths: Sequence[Path | str], image_size: int, channels: int):
        self.files = FolderImageDataset(paths, image_size, channels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.files.decode(self.files.paths[index])}


def part_images(items: Sequence | np.ndarray, image_size: int, channels: int) -> Dataset:
    """Images a composite modality hands over: file paths, or arrays (one per image, or stacked).

    Raises:
        ValueError: ``items`` is neither.
    """
    if isinstance(items, np.ndarray) or (len(items) and all(isinstance(i, np.ndarray) for i in items)):
        stack = items if isinstance(items, np.ndarray) else np.stack(list(items))
        resized = resize_stack(stack, image_size, channels)
        return ArrayImageDataset(resized, np.arange(len(resized)), image_size, channels)
    if all(isinstance(i, (str, Path)) for i in items):
        return StrictImageFiles(list(items), image_size, channels)
    raise ValueError("the image modality takes image file paths or pixel arrays as a composite's items")
