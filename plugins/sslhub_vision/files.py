"""Image files to the ``image`` input, as the image modality made it in training; no torch.

Registered in the ``sslhub.files`` entry-point group, so ``sslhub embed``, ``sslhub predict``
and ``load_encoder(...).preprocess`` read images through it: RGB (or grey for one-channel
models), the shorter side resized to ``image_size`` (bilinear, antialiased), center-cropped,
scaled to ``[0, 1]``, NCHW float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

import sslhub

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageDecoder(sslhub.FileDecoder):
    """Image files -> ``{"image": float32 [B, C, S, S] in [0, 1]}``."""

    kind = "image"
    extensions = IMAGE_EXTENSIONS

    @classmethod
    def accepts(cls, model: sslhub.ModelInputs) -> bool:
        return model.input_names == ("image",) and "image_size" in model.preprocessing("image")

    def read(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        from PIL import Image, UnidentifiedImageError

        prep = self.model.preprocessing("image")
        size, channels = int(prep["image_size"]), int(prep.get("channels", 3))
        try:
            with Image.open(path) as img:
                img = img.convert("L" if channels == 1 else "RGB")
                width, height = img.size
                scale = size / min(height, width)
                new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
                if (new_h, new_w) != (height, width):
                    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise sslhub.DecodeError(f"{path}: cannot decode the image ({error})") from None
        yield str(path), _center_crop_chw(array, size)

    def collate(self, samples: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"image": np.stack(samples)}


def _center_crop_chw(array: np.ndarray, size: int) -> np.ndarray:
    """``[H, W(, C)]`` uint8 -> the center ``size`` square as float32 ``[C, size, size]`` in ``[0, 1]``."""
    if array.ndim == 2:
        array = array[:, :, None]
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    array = array[top : top + size, left : left + size]
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / 255.0
