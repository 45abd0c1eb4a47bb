"""onnxruntime vs PyTorch eager latency of an exported encoder on the CPU.

Target (docs PERFORMANCE.md): the exported encoder runs at least as fast as PyTorch eager
on the CPU at batch 1. This prints the median latency of both at each batch size and the
ratio; it asserts nothing.

    python benchmarks/bench_onnx.py                  # a small conv encoder on 32x32 images
    python benchmarks/bench_onnx.py --threads 1 --repeats 50
    python benchmarks/bench_onnx.py --threads 1 --recipes image_simclr text_mlm audio_masked mae_image

From Python, for any encoder and modality::

    from bench_onnx import benchmark_onnx
    rows = benchmark_onnx(encoder, modality)              # exports to a temporary folder
    rows = benchmark_onnx(encoder, modality, model_dir)   # or times an existing export
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from bench_common import Result, display_path, format_table
from torch import nn

from sslhub import Encoder, EncoderOutput, Modality
from sslhub.components import DEFAULT_ENCODER_KEY
from sslhub.embed import ExportedEncoder
from sslhub.export import export_encoder


def _median_ms(call: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def benchmark_onnx(
    encoder: Encoder,
    modality: Modality,
    model_dir: Path | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 30,
    warmup: int = 5,
    threads: int | None = None,
    verbose: bool = True,
) -> list[dict[str, float]]:
    """Median latency of PyTorch eager and onnxruntime on the same inputs, per batch size.

    Args:
        encoder: the encoder (run on the CPU in float32, eval mode, under ``inference_mode``).
        modality: gives the inputs (``example_batch``).
        model_dir: an existing export of this encoder; ``None`` exports to a temporary folder.
        batch_sizes: batch sizes to time.
        repeats: timed calls per measurement (the median is reported).
        warmup: untimed calls first.
        threads: CPU threads for both runtimes (default: PyTorch's current setting), so the
            comparison is like for like.
        verbose: print the export summary and the table.

    Returns:
        One row per batch size: ``batch_size``, ``torch_ms``, ``onnxruntime_ms``, and
        ``speedup`` (= torch_ms / onnxruntime_ms; above 1 means onnxruntime is faster).
    """
    if repeats <= 0 or warmup < 0:
        raise ValueError(f"repeats must be > 0 and warmup >= 0, got {repeats} and {warmup}")
    threads = threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    encoder = encoder.to("cpu", torch.float32).eval()
    module = encoder.export_module().eval()
    with tempfile.TemporaryDirectory() as scratch:
        if model_dir is None:
            model_dir = Path(scratch)
            summary = export_encoder(encoder, modality, model_dir).summary()
            if verbose:
                print(summary)
        exported = ExportedEncoder(model_dir, threads=threads)
        rows = []
        try:
            for batch_size in batch_sizes:
                batch = modality.example_batch(batch_size, device="cpu")
                inputs = [batch[name] for name in encoder.input_names]
                feeds = {name: tensor.numpy() for name, tensor in zip(encoder.input_names, inputs, strict=True)}

                def run_torch(inputs=inputs) -> None:
                    with torch.inference_mode():
                        module(*inputs)

                torch_ms = _median_ms(run_torch, repeats, warmup)
                ort_ms = _median_ms(lambda feeds=feeds: exported.run(feeds), repeats, warmup)
                rows.append(
                    {
                        "batch_size": batch_size,
                        "torch_ms": torch_ms,
                        "onnxruntime_ms": ort_ms,
                        "speedup": torch_ms / ort_ms,
                    }
                )
        finally:
            torch.set_num_threads(previous_threads)
    if verbose:
        print(f"{type(encoder).__name__}, {threads} CPU thread(s), median of {repeats}:")
        print(f"{'batch':>6} {'pytorch ms':>11} {'onnxruntime ms':>15} {'pytorch/ort':>12}")
        for row in rows:
            print(
                f"{row['batch_size']:>6} {row['torch_ms']:>11.3f} {row['onnxruntime_ms']:>15.3f} "
                f"{row['speedup']:>11.2f}x"
            )
    return rows


def compare_onnx_for_recipes(
    recipes: Sequence[str | Path],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 30,
    threads: int | None = 1,
) -> list[Result]:
    """onnxruntime vs PyTorch eager for the encoder each recipe builds (at random init), one row per batch size.

    The target (PERFORMANCE.md): at batch 1 the exported encoder is at least as fast as eager.
    """
    from bench_engine import recipe_path

    from sslhub.cli import load_and_resolve
    from sslhub.engine import Run

    results = []
    for recipe in recipes:
        path = recipe_path(recipe)
        resolved = load_and_resolve(path, ["train.device=cpu"], [])
        with tempfile.TemporaryDirectory() as tmp:
            builder = Run(resolved, Path(tmp) / "run", show_progress=False)
            modality = builder.components.modality()
            encoder = builder.components.encoders(modality)[DEFAULT_ENCODER_KEY]
            rows = benchmark_onnx(
                encoder, modality, batch_sizes=batch_sizes, repeats=repeats, threads=threads, verbose=False
            )
        for row in rows:
            results.append(
                Result(
                    benchmark=f"onnx {path.stem} ({type(encoder).__name__}) batch {row['batch_size']}",
                    ours=row["onnxruntime_ms"],
                    baseline=row["torch_ms"],
                    unit="ms/call",
                    higher_is_better=False,
                    baseline_name="PyTorch eager, inference_mode, CPU",
                    target=1.0 if row["batch_size"] == 1 else None,
                    details={
                        "recipe": display_path(path),
                        "threads": threads or torch.get_num_threads(),
                        "repeats": repeats,
                    },
                )
            )
    return results


class BenchImageModality(Modality):
    """Random 32x32 RGB images, enough to export and time an image encoder."""

    name = "bench_image"
    input_names = ("image",)

    def __init__(self, size: int = 32):
        self.size = size

    def train_dataset(self):  # pragma: no cover - benchmarks do not train
        raise NotImplementedError

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return {"image": torch.randn(batch_size, 3, self.size, self.size, device=device)}

    def input_spec(self) -> dict[str, Any]:
        return {
            "inputs": {"image": {"dtype": "float32", "shape": ["batch", 3, self.size, self.size]}},
            "dynamic_axes": {"image": {0: "batch"}},
            "preprocessing": {"mean": [0.5] * 3, "std": [0.25] * 3},
        }


class BenchConvEncoder(Encoder):
    """A small ResNet-like stack (conv-BN-ReLU, three stride-2 stages, average pool): ``[B, 3, H, W] -> [B, 128]``."""

    input_names = ("image",)

    def __init__(self, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
            )

        self.body = nn.Sequential(
            block(3, width, 1),
            block(width, width, 1),
            block(width, 2 * width, 2),
            block(2 * width, 2 * width, 1),
            block(2 * width, 4 * width, 2),
            block(4 * width, 4 * width, 2),
        )
        self.feature_dim = 4 * width

    def forward(self, batch: dict[str, torch.Tensor]) -> EncoderOutput:
        spatial = self.body(batch["image"])
        return EncoderOutput(pooled=spatial.mean(dim=(2, 3)), spatial=spatial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both runtimes")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage")
    parser.add_argument(
        "--recipes", nargs="+", help="time the encoders these recipes build (names or files) instead of the conv stack"
    )
    args = parser.parse_args()
    if args.recipes:
        results = compare_onnx_for_recipes(
            args.recipes, batch_sizes=args.batch_sizes, repeats=args.repeats, threads=args.threads
        )
        print(format_table(results))
        return
    torch.manual_seed(0)
    benchmark_onnx(
        BenchConvEncoder(args.width),
        BenchImageModality(),
        batch_sizes=args.batch_sizes,
        repeats=args.repeats,
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
