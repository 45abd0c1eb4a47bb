"""Download the wheels sslhub needs that the lent GPU machines' image lacks, into ``.whl/``.

The workplace's GPU machines have no network; their Python (3.12, x86-64) already holds
torch, timm, transformers, tokenizers, onnx, onnxruntime, pluggy and the rest, but not
pydantic or soundfile. This fetches those wheels, at the versions of the environment it
runs in, for ``benchmarks/gpu_session.sh`` to install there offline:

    python benchmarks/fetch_gpu_wheels.py            # here, where pip reaches the registry
    # then on the GPU machine, with .whl carried:  bash benchmarks/gpu_session.sh tests

``--with-lightly`` adds lightly 1.6 for the peer comparison.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: what the GPU image lacks among sslhub's dependencies (and theirs)
MISSING_ON_GPU_IMAGE = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "soundfile",
    "cffi",
    "pycparser",
)
LIGHTLY = ("lightly", "hydra-core", "omegaconf")
#: pure-Python packages published only as source: built into a wheel here
LIGHTLY_FROM_SOURCE = ("antlr4-python3-runtime",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def pinned(names: tuple[str, ...]) -> list[str]:
    """``name==version`` for each package as installed here (the GPU side then runs what was tested here)."""
    requirements = []
    for name in names:
        try:
            requirements.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here; install sslhub (and .[bench] for lightly) first") from None
    return requirements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=REPO / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    parser.add_argument("--with-lightly", action="store_true")
    args = parser.parse_args(argv)
    names = MISSING_ON_GPU_IMAGE + (LIGHTLY if args.with_lightly else ())
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(args.dest)]
    command += ["--python-version", args.python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *pinned(names)], check=True)
    if args.with_lightly:
        build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(args.dest)]
        subprocess.run([*build, *pinned(LIGHTLY_FROM_SOURCE)], check=True)
    print(f"wheels in {args.dest}; keep it out of git (.git/info/exclude) and carry it to the GPU machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
