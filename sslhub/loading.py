"""``sslhub.load_encoder``: a trained encoder as a plain ``nn.Module`` in your own code, in one line.

Example::

    import sslhub

    model = sslhub.load_encoder("runs/image-simclr")          # a run, a fine-tune or an export folder
    inputs = model.preprocess(["cat.png", "dog.png"])         # {"image": float32 [2, 3, S, S]}
    features = model(inputs)                                  # pooled features [2, D]

Three kinds of folder load:

- a finished pretraining run (``recipe.yaml`` + ``checkpoints/``): the encoder is rebuilt from
  the saved recipe and gets the newest good checkpoint's weights, as ``sslhub export`` does;
- a fine-tune folder (``finetune.json`` + ``encoder.safetensors``): the encoder of the
  pretraining run ``finetune.json`` names (an enclosing folder), with the fine-tuned weights;
- an export folder written by ``sslhub export RUN_DIR --format safetensors`` (``encoder.json`` +
  ``encoder.safetensors``): rebuilt from the description in ``encoder.json`` alone, without the
  run or its data.

A folder is untrusted input (people share them): loading imports only the plugins installed
or named in ``plugins``, never a module the folder names, loads weights with safetensors or
``torch.load(weights_only=True)``, and reads no file outside the folder (a fine-tune folder's
run must enclose it).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sslhub.components import DEFAULT_ENCODER_KEY, BuildContext, Encoder, Modality, ModalityInfo
from sslhub.errors import SSLHubError
from sslhub.export_formats import RECORD_FILE, RECORD_FORMAT, WEIGHTS_FILE
from sslhub.files import path_inside
from sslhub.preprocessing import InputPreprocessor

FINETUNE_FILE = "finetune.json"


class LoadError(SSLHubError):
    """A folder :func:`load_encoder` cannot load; the message names the file and what to do."""


class LoadedEncoder(nn.Module):
    """A trained encoder, in eval mode: its input tensors -> pooled features ``[B, D]``.

    Call it with the batch mapping (``model({"image": x})``), the tensors in
    :attr:`input_names` order (``model(input_ids, attention_mask)``, as the ONNX export takes
    them) or by name (``model(image=x)``). :meth:`preprocess` makes those tensors from files or
    texts exactly as ``sslhub embed`` does.

    Attributes:
        encoder: the sslhub :class:`~sslhub.Encoder` (``encoder(batch)`` gives tokens or feature maps too).
        input_names: the tensors it takes, in order.
        feature_dim: ``D``.
        source: the folder it was loaded from.
    """

    def __init__(self, encoder: Encoder, preprocessor: InputPreprocessor, source: Path):
        super().__init__()
        self.encoder = encoder
        self.input_names: tuple[str, ...] = tuple(encoder.input_names)
        self.feature_dim = int(encoder.feature_dim)
        self.source = source
        self._preprocessor = preprocessor
        self.eval()

    def forward(self, *inputs: Tensor | Mapping[str, Tensor], **named: Tensor) -> Tensor:
        """Pooled features ``[B, D]`` of one batch (extra mapping keys such as ``label`` are ignored)."""
        if len(inputs) == 1 and isinstance(inputs[0], Mapping) and not named:
            batch = dict(inputs[0])
        elif inputs and not named:
            if len(inputs) != len(self.input_names):
                raise ValueError(
                    f"expected {len(self.input_names)} tensors {list(self.input_names)}, got {len(inputs)}"
                )
            batch = dict(zip(self.input_names, inputs, strict=True))
        elif named and not inputs:
            batch = named
        else:
            raise ValueError(f"pass a batch mapping, the tensors {list(self.input_names)} in order, or them by name")
        missing = [name for name in self.input_names if name not in batch]
        if missing:
            raise ValueError(f"missing inputs {missing}: the encoder takes {list(self.input_names)}")
        return self.encoder({name: batch[name] for name in self.input_names}).pooled

    def preprocess(
        self, files: Sequence[str | Path] | None = None, *, texts: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """The encoder's input tensors for files (folders expanded) or texts, on the encoder's device.

        Decoding is ``sslhub embed``'s: images resized and center-cropped to the training size,
        scaled to ``[0, 1]``; ``.txt`` (one text per non-empty line) and ``.jsonl`` files or
        ``texts`` tokenized with the run's tokenizer and padded; audio files mixed to mono,
        resampled, cropped or padded, then the modality's front end (log-mel) when the encoder
        takes features; ``.npz``/``.npy`` files taken as they are.

        Example::

            inputs = model.preprocess(texts=["a first text", "another one"])
            features = model(inputs)  # [2, D]
        """
        arrays = self._preprocessor.batch(files or [], texts or [])
        device = next(self.encoder.parameters(), torch.empty(0)).device
        return {name: torch.from_numpy(array).to(device) for name, array in arrays.items()}

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing constants (image size, tokenizer settings, sample rate...)."""
        return dict(self._preprocessor.preprocessing)


def load_encoder(
    path: str | Path,
    *,
    encoder: str = DEFAULT_ENCODER_KEY,
    device: str | torch.device = "cpu",
    plugins: Sequence[str] = (),
) -> LoadedEncoder:
    """Load a trained encoder from a run, fine-tune or export folder (see the module docstring).

    Args:
        path: the folder.
        encoder: which encoder of a run with several (``encoders:`` keys); ``default`` for ``encoder:``.
        device: where the module is placed.
        plugins: modules to load as plugins (``-p``), for components not installed as packages.

    Returns:
        A :class:`LoadedEncoder` in eval mode.

    Raises:
        LoadError: the folder is none of these, a file is missing or corrupt, or the encoder key is unknown.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise LoadError(f"{folder} is not a folder: pass a run directory, a fine-tune folder or an export folder")
    if (folder / FINETUNE_FILE).is_file():
        loaded = _from_finetune(folder, encoder, list(plugins))
    elif (folder / "recipe.yaml").is_file():
        loaded = _from_run(folder, encoder, list(plugins))
    else:
        loaded = _from_export(_export_folder(folder, encoder), list(plugins))
    return loaded.to(device).eval()


# -- a pretraining run ----------------------------------------------------------------------------


def _from_run(run_dir: Path, key: str, plugins: list[str]) -> LoadedEncoder:
    encoder, modality = _trained_encoder(run_dir, key, plugins)
    return LoadedEncoder(encoder, _run_preprocessor(encoder, modality), run_dir)


def _trained_encoder(run_dir: Path, key: str, plugins: list[str]) -> tuple[Encoder, Modality]:
    """The run's encoder ``key`` with the newest good checkpoint's weights, on the CPU, and its modality."""
    from sslhub.cli import resolve_saved_recipe
    from sslhub.engine import Run

    if not (run_dir / "checkpoints").is_dir():
        raise LoadError(f"{run_dir} is a run without checkpoints: it has not finished a training step to load")
    # The CPU and torch's own thread count: loading must not change the caller's process settings.
    recipe = resolve_saved_recipe(run_dir / "recipe.yaml", ["train.device=cpu", "train.threads=null"], run_dir, plugins)
    if key not in recipe.encoders:
        raise LoadError(f"{run_dir} has no encoder {key!r}; its encoders are {sorted(recipe.encoders)}")
    trained = Run(recipe, run_dir, resume=False, show_progress=False).load_trained()
    return trained.encoders[key], trained.modality


def _run_preprocessor(encoder: Encoder, modality: Modality) -> InputPreprocessor:
    """Preprocessing from the live modality: its input spec, its front end and its exported files (tokenizer)."""
    files = tempfile.TemporaryDirectory(prefix="sslhub-preprocess-")
    modality.write_export_files(Path(files.name), list(encoder.input_names))
    frontend = modality.export_frontend()
    return InputPreprocessor(
        encoder.input_names,
        modality.input_spec().get("preprocessing") or {},
        Path(files.name),
        frontend=frontend.module.eval() if frontend is not None else None,
        keep_alive=files,
    )


# -- a fine-tune folder ---------------------------------------------------------------------------


def _from_finetune(folder: Path, key: str, plugins: list[str]) -> LoadedEncoder:
    """The pretraining run's encoder with the fine-tuned ``encoder.safetensors`` (DOWNSTREAM contract 2)."""
    record = _read_json(folder / FINETUNE_FILE)
    run_dir = _enclosing_run(folder, record)
    own_key = record.get("encoder_key", DEFAULT_ENCODER_KEY)
    if not isinstance(own_key, str):
        raise LoadError(f"{folder / FINETUNE_FILE}: encoder_key must be a string, got {own_key!r}")
    if key not in (DEFAULT_ENCODER_KEY, own_key):
        raise LoadError(f"{folder / FINETUNE_FILE}: this fine-tune holds encoder {own_key!r}, not {key!r}")
    encoder, modality = _trained_encoder(run_dir, own_key, plugins)
    load_weights(encoder, path_inside(folder, WEIGHTS_FILE, what="the weights file", error=LoadError))
    return LoadedEncoder(encoder, _run_preprocessor(encoder, modality), folder)


def _enclosing_run(folder: Path, record: Mapping[str, Any]) -> Path:
    """The run ``finetune.json``'s ``run_dir`` names; it must be a folder above ``folder``."""
    relative = record.get("run_dir")
    if not isinstance(relative, str) or not relative:
        raise LoadError(f'{folder / FINETUNE_FILE}: run_dir must name the pretraining run (e.g. "../..")')
    run_dir = (folder / relative).resolve()
    if run_dir not in folder.resolve().parents:
        raise LoadError(
            f"{folder / FINETUNE_FILE}: run_dir {relative!r} is not a folder enclosing the fine-tune; "
            "a fine-tune is loaded only from inside its own pretraining run"
        )
    if not (run_dir / "recipe.yaml").is_file():
        raise LoadError(f"{folder / FINETUNE_FILE}: run_dir {relative!r} ({run_dir}) holds no recipe.yaml")
    return run_dir


# -- an export folder -----------------------------------------------------------------------------


def _export_folder(folder: Path, key: str) -> Path:
    """The folder holding ``encoder.json``: ``folder`` itself, ``folder/KEY`` or a run's ``onnx/`` export."""
    candidates = [folder, folder / key] if key != DEFAULT_ENCODER_KEY else [folder]
    for candidate in candidates:
        if (candidate / RECORD_FILE).is_file():
            return candidate
    keys = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / RECORD_FILE).is_file())
    if keys and key == DEFAULT_ENCODER_KEY:
        raise LoadError(f"{folder} holds one export per encoder {keys}: choose one with encoder=KEY")
    if keys:
        raise LoadError(f"{folder} has no encoder {key!r}; it has {keys}")
    hint = " (it holds an ONNX export only)" if any(folder.glob("*.onnx")) else ""
    raise LoadError(
        f"{folder} is not a run directory (recipe.yaml), a fine-tune folder ({FINETUNE_FILE}) or an export folder "
        f"({RECORD_FILE}){hint}: export the run with `sslhub export RUN_DIR --format safetensors`"
    )


def _from_export(folder: Path, plugins: list[str]) -> LoadedEncoder:
    record = _read_json(path_inside(folder, RECORD_FILE, what="the encoder description", error=LoadError))
    if record.get("format") != RECORD_FORMAT:
        raise LoadError(f"{folder / RECORD_FILE}: not an sslhub encoder description (format {record.get('format')!r})")
    encoder = _build_described(record, folder / RECORD_FILE, plugins)
    load_weights(encoder, path_inside(folder, WEIGHTS_FILE, what="the weights file", error=LoadError))
    modality = record.get("modality") or {}
    preprocessing = (modality.get("input_spec") or {}).get("preprocessing") or {}
    for name in record.get("files") or []:
        path_inside(folder, str(name), what=f"{RECORD_FILE}'s files entry", error=LoadError)
    return LoadedEncoder(encoder, InputPreprocessor(encoder.input_names, preprocessing, folder), folder)


class RecordedModality(Modality):
    """A modality known only by what an export recorded: its ``info()`` and ``input_spec()``; no data."""

    def __init__(self, description: Mapping[str, Any], input_names: Sequence[str]):
        self._info = ModalityInfo.from_dict(description.get("info") or {})
        self._spec = dict(description.get("input_spec") or {})
        self.input_names = tuple(input_names)

    def info(self) -> ModalityInfo:
        return self._info

    def input_spec(self) -> dict[str, Any]:
        return dict(self._spec)

    def train_dataset(self) -> Any:
        raise SSLHubError("an encoder loaded from an export folder has no training data")

    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        raise SSLHubError("an encoder loaded from an export folder has no example batch")


def _build_described(record: Mapping[str, Any], where: Path, plugins: list[str]) -> Encoder:
    """The encoder ``encoder.json`` describes, built through the catalog (never an import it names)."""
    from pydantic import ValidationError

    from sslhub.cli import load_catalog
    from sslhub.registry import RegistryError
    from sslhub.resume import seed_everything

    description = record.get("encoder") or {}
    name, params = description.get("name"), description.get("params") or {}
    try:
        component = load_catalog(plugins).registry("encoder").get(str(name))
        validated = component.params.model_validate(params)
    except RegistryError as error:
        raise LoadError(f"{where}: encoder {name!r}: {error}") from None
    except ValidationError as error:
        raise LoadError(f"{where}: invalid parameters of encoder {name!r}: {error}") from None
    modality = record.get("modality") or {}
    seed_everything(int(record.get("seed", 0)))
    context = BuildContext(
        modality=RecordedModality(modality, record.get("input_names") or ()),
        modality_name=str(modality.get("name", "")),
        seed=int(record.get("seed", 0)),
    )
    return component.factory(validated, context)


# -- files --------------------------------------------------------------------------------------


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a safetensors state dict into ``module`` (every key must match), with errors naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise LoadError(f"{path} is missing: the weights of this folder's encoder")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise LoadError(f"{path} is not a readable safetensors file ({error})") from None
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise LoadError(f"{path} does not fit the encoder it describes: {first}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LoadError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise LoadError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value
