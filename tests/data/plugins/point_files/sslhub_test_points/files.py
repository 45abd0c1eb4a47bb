"""``.xyz`` files (one ``x y z`` point per line) to the ``points`` input, scaled as the model's metadata says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

import sslhub


class PointDecoder(sslhub.FileDecoder):
    """``.xyz`` files -> ``{"points": float32 [B, N, 3]}``, each point times the preprocessing's ``scale``."""

    kind = "points"
    extensions = (".xyz",)

    @classmethod
    def accepts(cls, model: sslhub.ModelInputs) -> bool:
        return model.input_names == ("points",)

    def read(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        try:
            points = np.loadtxt(path, dtype=np.float32, ndmin=2)
        except ValueError as error:
            raise sslhub.DecodeError(f"{path}: not x y z rows ({error})") from None
        yield str(path), points * float(self.model.preprocessing().get("scale", 1.0))

    def collate(self, samples: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"points": np.stack(samples)}
