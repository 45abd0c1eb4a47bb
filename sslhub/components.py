"""The base classes every component implements: modality, augmentation, encoder, objective.

A batch is always a ``dict[str, Tensor]`` whose keys the modality defines (``image``,
``input_ids``/``attention_mask``, ``waveform``/``features``, and ``label`` on labeled splits).
Plugins subclass these and register a factory ``factory(params, context)`` for each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

Batch = dict[str, Tensor]

FEATURE_KINDS = ("pooled", "tokens", "spatial")
#: properties an encoder may declare beside its features, and objectives may require:
#: ``causal``: output position ``t`` depends only on inputs up to ``t`` (no look-ahead), which
#: autoregressive objectives (``apc``, ``causal_lm``) need, or they would learn to copy the future.
#: ``frame_masking``: the encoder exposes its local frame features before the context network
#: and lets an objective put a mask embedding in their place: ``count_frames(batch) -> T'``,
#: ``embed_frames(batch) -> [B, T', D]`` and ``transform_frames(frames [B, T', D]) -> EncoderOutput``,
#: which contrastive masked objectives (``wav2vec2``) need to quantize the unmasked features.
#: ``token_embeddings``: the encoder has a token embedding table, returned by
#: :meth:`Encoder.get_input_embeddings`, which a tied language-model head (``mlm``, ``causal_lm``) reuses.
#: ``frame_layers``: the encoder gives the frames after any of its context-network layers:
#: ``num_context_layers`` and ``hidden_frames(batch, layer) -> [B, T', D]`` (layer 1 is the first),
#: which HuBERT's later iterations cluster (``masked_audio``'s ``teacher``).
#: ``patch_masking``: the encoder can encode a subset of an image's patches:
#: :meth:`Encoder.patch_layout`, :meth:`Encoder.encode_patches` and
#: :meth:`Encoder.set_patch_positions`, which masked-image objectives (``mae``) need to run it
#: on the visible patches only.
ENCODER_PROPERTIES = ("causal", "token_embeddings", "frame_masking", "patch_masking", "frame_layers")
#: what each property means, in the words validation uses when an encoder lacks one.
PROPERTY_MEANINGS = {
    "causal": "a causal encoder (each output position may see only earlier inputs, or predicting what comes "
    "next is copying)",
    "token_embeddings": "an encoder with a token embedding table (get_input_embeddings()), which its tied "
    "prediction head reuses",
    "frame_masking": "an encoder that exposes its frame features before the context network and takes a mask "
    "embedding in their place",
    "patch_masking": "an encoder that can encode a subset of an image's patches (a vision transformer with a fixed "
    "patch grid, e.g. timm vit_tiny_patch16_224 with model_kwargs: {patch_size: 4})",
    "frame_layers": "an encoder that gives the frames after each of its context-network layers (hidden_frames)",
}
#: capabilities a modality may declare (``provides=`` at its registration) and a component's
#: parameters may need from it (:meth:`Params.modality_needs`):
#: ``word_continuations``: the modality knows which vocabulary ids continue a word (``##`` pieces),
#: returned by :meth:`Modality.continuation_token_ids`, which whole-word masking (``mlm``) needs.
MODALITY_PROPERTIES = ("word_continuations",)
#: what each modality capability means, in the words validation uses when a modality lacks one.
MODALITY_PROPERTY_MEANINGS = {
    "word_continuations": "a modality that knows which tokens continue a word (continuation_token_ids())",
}
#: what encoders may declare (``provides=``) and objectives require (``requires=``) at registration.
CAPABILITIES = (*FEATURE_KINDS, *ENCODER_PROPERTIES)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class StrictNumbers(BaseModel):
    """Numbers as a user means them, for every recipe section and every component's parameters.

    YAML reads ``yes`` and ``true`` as booleans, which pydantic would quietly turn into 1
    (``lr: true`` trained with lr 1.0); ``.inf`` and ``.nan`` are floats no setting wants; an
    integer beyond 64 bits overflows in torch far from the recipe. So every field refuses a
    boolean where it wants a number, every float must be finite, and every integer must fit
    in 64 bits, each reported at the field that holds it.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _strict_numbers(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        # A model-level check: pydantic allows no field validator on a union's discriminator (``type``).
        result = handler(data)
        if not isinstance(data, dict) or not isinstance(result, BaseModel):
            return result
        errors = []
        for name, info in type(result).model_fields.items():
            key = info.alias or name
            if key not in data:
                continue
            value = getattr(result, name)
            if _boolean_made_number(data[key], value):
                errors.append((key, data[key], "expected a number, got a boolean (true/false/yes/no)"))
            elif _outside_int64(value):
                errors.append((key, data[key], f"integer out of range: must be between {INT64_MIN} and {INT64_MAX}"))
        if errors:
            raise field_errors(cls.__name__, errors)
        return result


def field_errors(title: str, errors: list[tuple[str, Any, str]]) -> ValidationError:
    """A ValidationError with one error per ``(field, input, message)``, for a model validator to raise.

    Raised inside a validator, each error keeps its field in the location, so the recipe error
    names the field (``train.optimizer.momentum``), not only the model holding it.
    """
    line_errors = [
        InitErrorDetails(type=PydanticCustomError("field_error", message), loc=(key,), input=raw)
        for key, raw, message in errors
    ]
    return ValidationError.from_exception_data(title, line_errors)


def _boolean_made_number(raw: Any, result: Any) -> bool:
    """Whether validation turned a boolean somewhere in ``raw`` into a number in ``result``."""
    if isinstance(raw, bool):
        return not isinstance(result, bool)
    if isinstance(raw, (list, tuple)) and isinstance(result, (list, tuple)) and len(raw) == len(result):
        return any(_boolean_made_number(r, v) for r, v in zip(raw, result, strict=True))
    if isinstance(raw, dict) and isinstance(result, dict):
        return any(_boolean_made_number(raw[key], result[key]) for key in raw.keys() & result.keys())
    return False


def _outside_int64(result: Any) -> bool:
    if isinstance(result, int) and not isinstance(result, bool):
        return not INT64_MIN <= result <= INT64_MAX
    if isinstance(result, (list, tuple)):
        return any(_outside_int64(item) for item in result)
    if isinstance(result, dict):
        return any(_outside_int64(item) for item in result.values())
    return False


class Params(StrictNumbers):
    """Base for every component's parameters: unknown keys are errors, values are validated.

    Numbers are strict (see :class:`StrictNumbers`): no booleans as numbers, finite floats,
    64-bit integers.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=())

    def file_problems(
        self, test_fraction: float | None = None, seed: int = 0, min_train_per_class: int = 1
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems only the files these parameters name can show, as ``(field path, message)`` pairs.

        ``sslhub validate`` calls it on the modality's parameters (and on the source of
        ``evaluate.data`` with its ``test_fraction`` and ``split_seed``) once every field is
        valid, so a group pattern that matches no file is reported at its recipe line. Paths are
        relative to these parameters (``("source", "group_pattern")``). A labeled split whose
        probe-train side has a class with fewer than ``min_train_per_class`` samples (the
        evaluation's largest few-shot k) is a problem too: see :func:`sslhub.split_problem`.
        None by default.
        """
        return []

    def modality_needs(self) -> frozenset[str]:
        """Modality capabilities these parameters need (:data:`MODALITY_PROPERTIES`).

        Recipe validation checks them against what the recipe's modality declares
        (``provides=`` at its registration; a composite modality's parts count too) before
        anything is built: ``mlm`` with ``whole_word_masking: true`` needs ``word_continuations``.
        None by default.
        """
        return frozenset()

    def part_params(self) -> dict[str, dict[str, Any]]:
        """For a composite modality: each part's parameters, by part name (``{"text": {...}}``).

        A composite modality (registered with ``modalities=[...]``, its parts) builds each part
        through :meth:`BuildContext.part`; recipe validation checks these mappings against each
        part's own parameters, so a bad value is reported at its recipe line before anything is
        built. Keys of a part's mapping that are also fields of the composite are reported at
        that field. Empty by default (a part then gets its defaults).
        """
        return {}


FieldProblems = list[tuple[tuple[str | int, ...], str]]


def path_problems(
    path: Path | str,
    kind: Literal["file", "folder", "file or folder"],
    suffixes: Sequence[str] = (),
    field: str = "path",
) -> FieldProblems:
    """Why ``path`` cannot be the data a source names, as :meth:`Params.file_problems` pairs (``[]``: none).

    For a :meth:`Params.file_problems` of a source: ``sslhub validate`` then reports a missing,
    empty or wrong-kind path at its recipe line instead of the run failing later.

    Args:
        path: as the recipe gives it (``~`` expanded; relative to the working directory).
        kind: what the source reads; ``"file or folder"`` accepts either.
        suffixes: for a folder, the file suffixes it must hold at least one of (``.png``),
            searched recursively, case-insensitive; empty: any file.
        field: the parameter holding the path.
    """
    path = Path(path).expanduser()
    where = (field,)
    if not path.exists():
        return [(where, f"{path} does not exist (a relative path starts from the folder the command runs in)")]
    if path.is_dir() and kind == "file":
        return [(where, f"{path} is a folder; expected a file")]
    if not path.is_dir() and kind == "folder":
        return [(where, f"{path} is a file; expected a folder")]
    if path.is_dir():
        wanted = {suffix.lower() for suffix in suffixes}
        found = any(p.is_file() and (not wanted or p.suffix.lower() in wanted) for p in path.rglob("*"))
        if not found:
            what = f"no {' / '.join(sorted(wanted))} file" if wanted else "no file"
            return [(where, f"folder {path} holds {what} (searched recursively)")]
    elif path.stat().st_size == 0:
        return [(where, f"{path} is empty (0 bytes)")]
    return []


class ModalityInfo(BaseModel):
    """Facts about a modality's inputs that encoders, augmentations and objectives size themselves from.

    Returned by :meth:`Modality.info`. A modality sets the fields that apply to it and leaves
    the others out; only the fields it set are written to an export's ``encoder.json``
    (:meth:`as_dict`), so a record keeps the same keys it always had. Anything else a plugin
    wants to record goes in ``extra`` (written at the top level beside the fields).

    Attributes:
        channels: image channels ``C`` (1 or 3).
        image_size: image side ``S``.
        mean, std: per-channel normalisation constants (applied inside image encoders).
        value_range: ``[low, high]`` of the values an encoder receives, or ``None`` when unbounded.
        vocab_size: token vocabulary size, special tokens included.
        pad_token_id, mask_token_id, cls_token_id, sep_token_id, unk_token_id: special token
            ids (``None`` where the tokenizer lacks one).
        special_token_ids: ids never masked or augmented.
        max_length: tokens per sample at most, special tokens included.
        continuation_prefix: marks word-continuation pieces (``##``).
        tokenizer_file: the tokenizer's file name beside an exported model.
        sample_rate: audio samples per second.
        n_mels: mel bands of the log-mel features ``[B, n_mels, T]``.
        hop_length: waveform samples per feature frame.
        dim: size ``D`` of a vector input ``[B, D]``.
        parts: a composite modality's parts (``["image", "text"]``).
        extra: free-form facts (``frames``, ``num_classes``...), for records and reports.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: int | None = None
    image_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    value_range: list[float] | None = None
    vocab_size: int | None = None
    pad_token_id: int | None = None
    mask_token_id: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    unk_token_id: int | None = None
    special_token_ids: list[int] | None = None
    max_length: int | None = None
    continuation_prefix: str | None = None
    tokenizer_file: str | None = None
    sample_rate: int | None = None
    n_mels: int | None = None
    hop_length: int | None = None
    dim: int | None = None
    parts: list[str] | None = None
    extra: dict[str, Any] = {}

    def as_dict(self) -> dict[str, Any]:
        """The fields this modality set (``None`` values it set included), then ``extra``: the JSON record."""
        return {**self.model_dump(exclude_unset=True, exclude={"extra"}), **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModalityInfo:
        """The inverse of :meth:`as_dict`: known keys become fields, the rest ``extra`` (an export's record)."""
        known = {k: v for k, v in data.items() if k in cls.model_fields and k != "extra"}
        return cls(**known, extra={k: v for k, v in data.items() if k not in known})

    def merged(self, other: ModalityInfo) -> ModalityInfo:
        """These facts updated with those ``other`` set (a composite modality's parts, in order)."""
        return ModalityInfo.from_dict({**self.as_dict(), **other.as_dict()})

    def needed(self, name: str, who: str) -> Any:
        """The value of field ``name``, or a ValueError saying that ``who`` needs it and the modality lacks it."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(
                f"{who} needs the modality's {name} (ModalityInfo.{name}), which this modality does not give"
            )
        return value


@dataclass
class BuildContext:
    """What a factory may know about the run it is built for.

    Attributes:
        modality: the built modality (``None`` while the modality itself is being built).
        modality_name: the recipe's ``data.modality``.
        run_dir: the run directory, for components that save artifacts (a trained tokenizer);
            ``None`` for throwaway builds such as validation or tests.
        seed: the recipe seed.
        device: where training will run. The encoder given to an objective already sits there,
            so an objective that probes it while being built makes its example batch there
            (``modality.example_batch(2, context.device)``).
        encoder: the built encoder, given to objectives (heads size themselves from it); an
            :class:`EncoderSet` for objectives that use several encoders.
        catalog: the :class:`sslhub.Catalog` the run's components come from, for
            :meth:`part`; ``None``: the installed plugins.
    """

    modality: Modality | None = None
    modality_name: str = ""
    run_dir: Path | None = None
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    encoder: Encoder | EncoderSet | None = None
    catalog: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        # The catalog holds plugin modules, which do not pickle; a component that keeps its context
        # is pickled into DataLoader workers (spawn) and DDP processes, which build nothing.
        return {**self.__dict__, "catalog": None}

    def part(self, name: str, params: Mapping[str, Any] | None = None) -> Modality:
        """Build the registered modality ``name`` as a part of the composite modality being built.

        A composite modality (``image_text``: an image part and a text part) calls this in its
        factory instead of importing another plugin's classes, so the part comes from whichever
        plugin registers ``name`` and ``-p no:PLUGIN`` really removes it. The part then serves
        the composite through the :class:`Modality` methods (:meth:`Modality.fit_part`,
        :meth:`Modality.part_dataset`, :meth:`Modality.collate`, :meth:`Modality.on_device`,
        :meth:`Modality.raw_features`, :meth:`Modality.info`...).

        Args:
            name: the part's registered modality name (``"image"``).
            params: its parameters as a recipe would give them under ``data:`` (validated by
                the part's own :class:`Params`); ``None``: its defaults.

        Raises:
            sslhub.SSLHubError: no loaded plugin registers ``name``, or ``params`` are invalid;
                the message names the composite and the part.
        """
        from sslhub.parts import build_part

        return build_part(self, name, dict(params or {}))


@dataclass
class EvalSplit:
    """A labeled split for representation evaluation; samples carry an int ``label``."""

    train: Dataset
    test: Dataset
    class_names: Sequence[str] = ()
    #: distinct groups per side, ``{"train": n, "test": n}``, when the split keeps groups apart.
    groups: dict[str, int] | None = None
    #: where the labeled samples come from (a path), for the report; empty for the recipe's own data.
    source: str = ""


class Modality(ABC):
    """How raw samples are found, decoded and batched, and what an encoder receives.

    Decoding runs per sample in DataLoader workers (CPU, cheap); anything batched and
    heavy (spectrograms, augmentations) runs on the device afterwards.
    """

    #: tensor keys an encoder consumes, in the order an exported ONNX model takes them.
    input_names: ClassVar[tuple[str, ...]] = ()

    def prepare(self, run_dir: Path | None) -> None:  # noqa: B027 - optional hook
        """Do one-off work before encoders are built (train a tokenizer, fit statistics)."""

    @abstractmethod
    def train_dataset(self) -> Dataset:
        """Map-style dataset of unlabeled training samples, each a ``dict[str, Tensor]``."""

    def held_out_dataset(self) -> Dataset | None:
        """Unlabeled held-out samples for objective metrics (masked-token accuracy), if any."""
        return None

    def eval_split(self) -> EvalSplit | None:
        """Labeled train/test samples for kNN and linear-probe evaluation, if the data has labels."""
        return None

    def labeled_split(self, source: Params, test_fraction: float, seed: int) -> EvalSplit:
        """A labeled split of another source (``evaluate.data``, ``sslhub evaluate --data``).

        Args:
            source: validated against the type of this modality's ``data.source`` (so it has the
                same shape, grouping options included).
            test_fraction: share of each class for the probe-test side.
            seed: seed of the split.

        The samples are decoded exactly as training samples are (same size, rate, tokenizer,
        statistics); groups, when the source names them, never straddle the two sides (see
        :func:`sslhub.group_split`). Raises ValueError when this modality cannot read labeled
        data from ``source``.
        """
        raise ValueError(f"modality {type(self).__name__} cannot evaluate on another labeled source")

    def labeled_source(self, path: Path, label: str | None = None, group: str | None = None) -> dict[str, Any]:
        """The ``data.source`` mapping for a labeled file or folder named on the command line.

        ``sslhub evaluate RUN --data PATH`` types ``PATH`` with this (a folder, a ``.csv``...);
        ``label`` names the label field or column and ``group`` the grouping option, for
        sources that have them. Raises ValueError for a path this modality cannot read.
        """
        raise ValueError(f"modality {type(self).__name__} cannot read a labeled source from a path; give a mapping")

    def raw_features(self, batch: Batch) -> Tensor | dict[str, Tensor] | None:
        """Features of a labeled batch that need no learning: the raw-input baseline of the evaluation.

        The evaluation scores them with the same kNN, linear and few-shot probes as the encoders
        (``raw_input`` in ``evaluation.json``), so a report shows whether training beat the input
        itself. They must be a fixed function of each sample alone (no statistics fitted on the
        data, no randomness), and small enough to probe (about a thousand columns at most).

        Args:
            batch: a collated labeled batch after :meth:`on_device` (the ``label`` key removed).

        Returns:
            float ``[B, F]``; or, for a modality whose batch feeds several encoders, a mapping
            from each encoder key to that part's ``[B, F_key]`` features (scored as
            ``KEY/knn_accuracy`` and so on); ``None`` (the default) when there is no raw baseline.
        """
        return None

    def collate(self, samples: list[Batch]) -> Batch:
        """Combine decoded samples into a batch (CPU)."""
        return default_collate(samples)

    def on_device(self, batch: Batch) -> Batch:
        """Batched preprocessing after the batch reaches the device, before augmentations."""
        return batch

    @abstractmethod
    def example_batch(self, batch_size: int, device: torch.device | str = "cpu") -> Batch:
        """A synthetic batch shaped like real encoder input, for dry runs, tests and export."""

    def info(self) -> ModalityInfo:
        """Facts encoders size themselves from (``channels``, ``vocab_size``, ``n_mels``...): see :class:`ModalityInfo`."""
        return ModalityInfo()

    def input_spec(self) -> dict[str, Any]:
        """Input names, dtypes, shapes (symbolic axes as strings) and preprocessing constants.

        Stored as ONNX metadata so a deployer needs nothing else. ``dynamic_axes`` maps each
        input name to ``{axis_index: axis_name}`` for the axes that vary.
        """
        return {"inputs": {}, "dynamic_axes": {}, "preprocessing": {}}

    def fingerprint(self) -> str:
        """A short string identifying the data (recorded in the run's environment file)."""
        return ""

    def write_export_files(self, out_dir: Path, input_names: Sequence[str]) -> list[str]:
        """Write the files a deployer needs beside an exported model (a tokenizer); return their names.

        Called by the exporter after :meth:`prepare`; names are relative to ``out_dir`` and are
        listed in the model's metadata under ``files``. ``input_names`` are the inputs of the
        model being exported, so a composite modality writes only what that model reads.
        """
        return []

    def augmentation_samples(self, batch: Batch, views: list[Batch]) -> dict[str, Tensor | str]:
        """Pictures or text showing what the augmentations make of a few samples, for the run report.

        Called once at the end of a run (when ``report.enabled``), on the main process, without
        gradients. The run writes each picture as ``augmentation_samples/NAME.png`` and each text
        as ``augmentation_samples/NAME.txt``; the report shows them so a user can judge whether
        the augmentations are sensible. The default draws nothing.

        Args:
            batch: a few training samples (``n``, at most 8) after :meth:`on_device`.
            views: the recipe's augmentations applied to ``batch``, one batch per view.

        Returns:
            ``{name: picture or text}``. A picture is uint8 ``[H, W, 3]`` or ``[H, W]`` (for
            instance one row per sample: the sample, then each of its views); a text is a ``str``
            (the sample and its views, one per line). ``{}`` when the modality shows nothing.
        """
        return {}

    # ---------------------------------------------------------------- composites and their parts
    @property
    def parts(self) -> Mapping[str, Modality]:
        """A composite modality's part modalities by name (``{"image": ..., "text": ...}``); ``{}`` otherwise.

        Components of a composite reach a part's own methods through it (``clip`` decodes
        captions with ``modality.parts["text"].decode_sample``).
        """
        return {}

    def fit_part(self, items: Sequence[Any], run_dir: Path | None) -> None:  # noqa: B027 - optional hook
        """As a part of a composite modality: fit what this modality learns from data, on ``items``.

        The composite (built through :meth:`BuildContext.part`) calls it once, from its own
        :meth:`prepare`, with its training items of this part (for ``text``: the training
        captions, on which it trains its tokenizer); it replaces :meth:`prepare`, which reads
        the modality's own ``data.source``. With a ``run_dir``, artifacts are saved (and reused
        on resume) there, as :meth:`prepare` does. Nothing to fit by default.
        """

    def part_dataset(self, items: Sequence[Any]) -> Dataset:
        """As a part of a composite modality: samples decoded from the composite's ``items``.

        Sample ``i`` decodes ``items[i]`` alone (``text``: a string; ``image``: an image file
        path, or one uint8/float array per image, or a stacked ``[N, H, W(, C)]`` array) into the
        same sample keys this modality's own datasets give, without labels. An item that cannot
        be decoded raises (OSError or ValueError) rather than being replaced, so the composite
        can replace the whole tuple (an image with its caption). Called after :meth:`fit_part`.

        Raises:
            ValueError: by default: the modality cannot serve as a part.
        """
        raise ValueError(f"modality {type(self).__name__} cannot serve as a part of a composite modality")

    def decode_sample(self, batch: Batch, index: int, limit: int = 400) -> str | None:
        """Row ``index`` of a collated ``batch`` as readable text (at most ``limit`` characters), for
        reports (``mlm``'s masked examples, ``clip``'s retrieved captions); ``None`` (the default)
        when this modality has no text form."""
        return None

    # ---------------------------------------------------------------- declared capabilities
    def continuation_token_ids(self) -> list[int]:
        """Vocabulary ids that continue a word (``##`` pieces), for whole-word masking.

        The ``word_continuations`` capability: a modality that implements this declares
        ``provides=["word_continuations"]`` at registration, which recipe validation checks
        against what components need (:meth:`Params.modality_needs`).

        Raises:
            NotImplementedError: by default (the capability is not declared).
        """
        raise NotImplementedError(f"modality {type(self).__name__} does not know word-continuation tokens")

    def export_frontend(self) -> ExportFrontend | None:
        """Preprocessing from raw inputs to encoder inputs that can be exported as its own model.

        Audio returns its waveform-to-log-mel module, so a deployer can feed waveforms. The
        exporter writes it beside the encoder when the ONNX exporter can capture it, and says
        in the metadata whether it did.
        """
        return None


@dataclass
class ExportFrontend:
    """A module turning raw inputs into encoder inputs, for export beside the encoder.

    Attributes:
        module: takes ``input_names`` tensors positionally, returns the ``output_names``
            tensors (one tensor, or a tuple in that order).
        input_names: the raw inputs (``waveform``).
        output_names: what the module returns; must be encoder input names (``features``).
        example: one raw example per input name, batch first (traced and varied for checks).
        dynamic_axes: ``{input_name: {axis: axis_name}}`` for the raw inputs.
        output_axes: ``{output_name: {axis: axis_name}}`` naming the outputs' dynamic axes.
        atol: tolerance of the onnxruntime-vs-PyTorch check (spectrogram logs amplify float noise).
        description: one line for the metadata (what goes in, what comes out).
    """

    module: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    example: dict[str, Tensor]
    dynamic_axes: dict[str, dict[int, str]]
    output_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    atol: float = 1e-3
    description: str = ""


class Augmentation(nn.Module):
    """A batched, device-side transform making one random view: ``batch -> batch``.

    Each sample gets its own random parameters, drawn from torch's RNG on the batch's
    device so that checkpoints restore them exactly.
    """

    def forward(self, batch: Batch) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class PatchLayout:
    """How a ``patch_masking`` encoder cuts an image into patches.

    Attributes:
        patch_size: side ``p`` of a square patch, in pixels.
        grid: patches per column and per row ``(h, w)``; ``N = h * w``.
        prefix_tokens: tokens before the patches in the output (class and register tokens).
        dim: width ``D`` of each token.
    """

    patch_size: int
    grid: tuple[int, int]
    prefix_tokens: int
    dim: int


@dataclass
class EncoderOutput:
    """Features from one forward pass.

    Attributes:
        pooled: ``[B, D]`` one vector per sample (always present).
        tokens: ``[B, N, D]`` per token / frame / patch features, if the encoder has them.
        token_mask: ``[B, N]`` bool, True at real (non-padding) positions.
        spatial: ``[B, C, h, w]`` feature map, for convolutional image encoders.
    """

    pooled: Tensor
    tokens: Tensor | None = None
    token_mask: Tensor | None = None
    spatial: Tensor | None = None


class Encoder(nn.Module):
    """An ``nn.Module`` from a modality batch to :class:`EncoderOutput`.

    Subclasses set ``feature_dim`` (size of ``pooled``), ``provides`` (which of
    ``pooled``/``tokens``/``spatial`` they return, plus the properties in
    :data:`ENCODER_PROPERTIES` they have) and ``input_names`` (batch keys read, in export order).
    """

    feature_dim: int = 0
    provides: frozenset[str] = frozenset({"pooled"})
    input_names: tuple[str, ...] = ()

    def forward(self, batch: Mapping[str, Tensor]) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table; encoders that declare ``token_embeddings`` override this."""
        raise NotImplementedError(f"{type(self).__name__} does not declare provides 'token_embeddings'")

    def patch_layout(self) -> PatchLayout:
        """How the encoder cuts an image into patches; encoders that declare ``patch_masking`` override this."""
        raise NotImplementedError(f"{type(self).__name__} does not declare provides 'patch_masking'")

    def encode_patches(self, image: Tensor, ids_keep: Tensor) -> Tensor:
        """Encode only some patches of each image (``patch_masking``).

        Args:
            image: float ``[B, C, H, W]`` in ``[0, 1]`` (the encoder normalises as in ``forward``).
            ids_keep: int64 ``[B, K]`` indices (row-major in the patch grid) of the patches to encode.

        Returns:
            ``[B, P + K, D]``: the ``P`` prefix tokens, then the kept patches in ``ids_keep`` order.
        """
        raise NotImplementedError(f"{type(self).__name__} does not declare provides 'patch_masking'")

    def set_patch_positions(self, codes: Tensor, trainable: bool) -> None:
        """Write ``codes`` ``[N, D]`` (one per patch, row-major) into the patch position embedding
        (prefix positions set to zero), trainable or frozen (``patch_masking``)."""
        raise NotImplementedError(f"{type(self).__name__} does not declare provides 'patch_masking'")

    def export_module(self) -> nn.Module:
        """A module taking ``input_names`` tensors positionally and returning ``pooled``."""
        return _PooledExport(self).train(self.training)

    def export_native(self, directory: Path, modality: Modality) -> dict[str, str]:
        """Write the weights in the format of the library the encoder is built on; return what was written.

        ``sslhub export RUN_DIR --format native`` calls it with an empty ``directory`` (created
        beforehand) on the trained encoder, in eval mode on the CPU. A timm encoder writes weights
        that ``timm.create_model(..., pretrained_cfg_overlay=dict(file=...))`` loads, a transformers
        encoder a ``save_pretrained`` folder, and so on, so users load the backbone without sslhub.

        Args:
            directory: where to write (``EXPORT_DIR/native``).
            modality: the run's modality (its ``info()``, and ``write_export_files`` for a tokenizer).

        Returns:
            ``{file or folder name relative to directory: what it is and how to load it}``; empty
            (the default) when the encoder has no native format, and then nothing is written.
        """
        return {}


class _PooledExport(nn.Module):
    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.encoder(dict(zip(self.encoder.input_names, inputs, strict=True))).pooled


#: The key of a recipe's ``encoder:`` among the run's encoders (``encoder: X`` is ``encoders: {default: X}``).
DEFAULT_ENCODER_KEY = "default"


class EncoderSet(nn.ModuleDict):
    """A run's encoders by recipe key: always a mapping, with one entry for a recipe's ``encoder:``.

    ``encoders: {image: ..., text: ...}`` gives one key per part of a multimodal batch; ``encoder:``
    gives the single key :data:`DEFAULT_ENCODER_KEY`. Objectives registered with ``encoders=[...]``
    receive the whole set and pick theirs with ``encoders["image"]``; every other objective
    receives the one encoder it trains.
    """

    def __init__(self, encoders: Mapping[str, Encoder]):
        super().__init__(dict(encoders))

    @staticmethod
    def report_prefix(key: str) -> str:
        """``""`` for the default key, ``"KEY/"`` otherwise: the prefix of that encoder's report keys."""
        return "" if key == DEFAULT_ENCODER_KEY else f"{key}/"

    def named(self) -> list[tuple[str, Encoder]]:
        """``[(report prefix, encoder)]``: ``[("", e)]`` for ``encoder:``, ``[("image/", ...), ...]`` otherwise."""
        return [(self.report_prefix(key), encoder) for key, encoder in self.items()]

    def for_objective(self, key: str | None) -> Encoder | EncoderSet:
        """What an objective receives: the encoder under ``key``, or the whole set (``key`` None) for an
        objective that declared encoder slots."""
        return self if key is None else self[key]


@dataclass
class ObjectiveOutput:
    """A loss to minimise and scalar metrics to log (floats or 0-d tensors)."""

    loss: Tensor
    metrics: dict[str, float | Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """A pretext task: owns its corruption and its heads, and returns a loss.

    ``num_views`` says how many independently augmented views of each batch it needs;
    ``forward`` receives that many. Heads are parameters of the objective and are trained
    with the encoder, but not exported.
    """

    num_views: int = 1
    #: True when :meth:`report` takes the keyword argument ``baseline`` (see there).
    report_takes_baseline: ClassVar[bool] = False

    def forward(self, views: list[Batch], encoder: Encoder) -> ObjectiveOutput:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def held_out_metrics(self, batch: Batch, encoder: Encoder) -> dict[str, float]:
        """Metrics on one held-out batch (averaged by the engine); none by default."""
        return {}

    def report(self, run_dir: Path, encoder: Encoder, modality: Modality) -> dict[str, Any]:
        """Extra report entries or artifacts after training (reconstruction pictures).

        The run report shows the ``.png`` pictures and ``.txt`` texts an objective writes at the
        top of ``run_dir`` (``run_dir`` is ``None`` when there is no run directory to write to).

        An objective that sets :attr:`report_takes_baseline` also receives a keyword argument
        ``baseline``: ``(objective, encoder)``, this objective with fresh heads on the encoder at
        its random initialisation (the run's random-init baseline), whenever the recipe evaluates
        one (``None`` otherwise), so the report can score both the same way.
        """
        return {}

    def self_updated_parameters(self) -> list[nn.Parameter]:
        """Parameters this objective updates itself inside ``forward`` (a GAN discriminator).

        The engine keeps them out of DistributedDataParallel's gradient reduction (their own
        backward pass would clash with it); the objective averages their gradients across
        processes itself with :func:`sslhub.average_gradients` before its own optimizer step.
        """
        return []

    def prepare(self, modality: Modality, encoder: Encoder | EncoderSet) -> None:  # noqa: B027 - optional hook
        """Fit anything the objective derives from data before training (k-means targets).

        Called once on a freshly built objective before its first step, and not when its state
        comes from a checkpoint (resume, ``sslhub evaluate``/``export``): whatever it fits must
        therefore live in buffers or parameters, so checkpoints carry it.
        """

    def export_models(self, out_dir: Path, encoder: Encoder | EncoderSet, modality: Modality) -> dict[str, Any]:
        """Models of this objective that ``sslhub export`` writes beside the encoder (a VQ tokenizer).

        Write each under ``out_dir`` (it exists) and return ``{name: result}``, each result with
        ``path``, ``passed`` (checked against PyTorch) and ``summary`` (one line), or ``error``
        when it could not be exported. None by default.
        """
        return {}

    def export_heads(self) -> dict[str, nn.Module]:
        """Heads that map the pooled embedding ``[B, D]`` to another ``[B, K]`` vector, by name.

        ``sslhub export --include-head OBJECTIVE.NAME`` exports ``head(pooled)`` instead of the
        pooled embedding (a SimCLR projection, a CLIP joint-space projection). None by default.
        """
        return {}
