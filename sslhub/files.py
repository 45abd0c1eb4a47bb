"""The file-decoder interface: how a modality plugin turns files into a model's input arrays, without torch.

``sslhub embed``, ``sslhub predict`` and ``sslhub.load_encoder(...).preprocess`` read input
files through decoders that modality plugins provide. A decoder is a :class:`FileDecoder`
subclass in a module that does not import torch (the command runs on deployers' machines
with numpy and onnxruntime only), found through the ``sslhub.files`` entry-point group,
not the ``sslhub`` group (whose plugin modules import torch)::

    [project.entry-points."sslhub.files"]
    points = "my_package.files:PointCloudDecoder"

The entry point's name is the decoder's name in messages. For each model the core asks
every decoder whether it :meth:`~FileDecoder.accepts` the model's inputs; the one that does
reads the files with its :attr:`~FileDecoder.extensions`. ``.npy``/``.npz`` files (already
preprocessed arrays) are read by the core for any model.

Everything a decoder reads from the model folder goes through :meth:`ModelInputs.file`,
which refuses names that lead outside the folder: a shared model folder is untrusted input.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, ClassVar

import numpy as np

from sslhub.errors import SSLHubError
from sslhub.plugin_env import ENTRY_POINT_GROUP, disabled_plugins, strict_from_env

logger = logging.getLogger(__name__)

#: The entry-point group file decoders are registered in.
FILE_DECODER_GROUP = "sslhub.files"

#: A front end given by the caller: the decoder's arrays (``{"waveform": ...}``) -> the model's inputs.
Frontend = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class DecodeError(SSLHubError):
    """A model folder or an input file cannot be decoded; the message names which and why."""


def path_inside(folder: Path | str, name: str | PurePath, *, what: str, error: type[SSLHubError] = DecodeError) -> Path:
    """``folder / name``, refused unless it stays inside ``folder``.

    Names come from files in the folder (an export's metadata, a description), so they are
    untrusted: an absolute name, a ``..`` part, or a symbolic link leading out is an error.

    Args:
        folder: the model folder.
        name: a relative path inside it.
        what: what the name is, for the message (``"input_spec.preprocessing.tokenizer_file"``).
        error: the error class to raise.

    Raises:
        error: the name leads outside ``folder``.
    """
    folder = Path(folder)
    relative = PurePath(name)
    if relative.is_absolute() or relative.drive or ".." in relative.parts or not str(name):
        raise error(f"{what} {str(name)!r} leads outside {folder}: only relative paths to files inside it are read")
    path = folder / relative
    resolved, root = path.resolve(), folder.resolve()
    if root not in resolved.parents:
        raise error(f"{what} {str(name)!r} leads outside {folder} (a link?); only files inside the folder are read")
    return path


def check_external_data(onnx_path: Path | str) -> None:
    """Refuse an ONNX file whose tensors keep their data in files outside its folder.

    A graph names its external data files itself (``model.onnx.data``); onnxruntime's own
    check depends on its version, so the names are checked here before a session opens.

    Raises:
        DecodeError: a tensor's ``location`` is absolute, has a ``..`` part or is a link leading out.
    """
    try:
        import onnx
    except ImportError:  # a core dependency; without it only onnxruntime's own check (recent versions) remains
        return
    onnx_path = Path(onnx_path)
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as error:  # protobuf, onnx and OS errors alike for a bad file
        raise DecodeError(f"{onnx_path}: not a readable ONNX model ({type(error).__name__}: {error})") from None
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            path_inside(
                onnx_path.parent, location, what=f"{onnx_path.name}: the external data of tensor {tensor.name!r}"
            )


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of an ONNX graph: initializers, and tensors in node attributes and subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in [attribute.g] if attribute.HasField("g") else []:
                yield from _tensors(subgraph)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


@dataclass(frozen=True)
class ModelInputs:
    """What a decoder knows about the model it decodes for.

    Attributes:
        input_names: the model's inputs, in order (``("image",)``, ``("input_ids", "attention_mask")``).
        metadata: the export's metadata (``input_spec``, ``frontend``, ``files``...); for an
            encoder loaded in Python, the modality's ``input_spec`` under ``input_spec``.
        folder: the model folder; files it names are read through :meth:`file`.
        options: user options by name (``text_field``: the ``.jsonl`` key holding the text).
        frontend: a front end the caller supplies (a live modality's), used instead of an exported one.
    """

    input_names: tuple[str, ...]
    metadata: Mapping[str, Any]
    folder: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    frontend: Frontend | None = None

    def preprocessing(self, part: str | None = None) -> dict[str, Any]:
        """The ``input_spec.preprocessing`` constants; of ``part`` when a composite modality nests them by part."""
        prep = dict((self.metadata.get("input_spec") or {}).get("preprocessing") or {})
        if part is not None and isinstance(prep.get(part), dict):
            return dict(prep[part])
        return prep

    def file(self, name: str | PurePath, *, what: str) -> Path:
        """The model folder's file ``name`` (which may not exist), refused when it leads outside the folder."""
        return path_inside(self.folder, name, what=what)

    def onnx_session(self, name: str | PurePath, *, what: str) -> Any:
        """An onnxruntime session (CPU) of the folder's ONNX file ``name`` (a front end), checked as :meth:`file`.

        Raises:
            DecodeError: the file leads outside the folder, is missing, or its external data does.
        """
        from sslhub.embed import make_session

        path = self.file(name, what=what)
        if not path.is_file():
            raise DecodeError(f"{path} is missing: export the run again to write it")
        check_external_data(path)
        return make_session(path)


class FileDecoder:
    """Base class of a modality's file decoder: files -> samples -> batches of input arrays.

    Subclasses set :attr:`kind` and :attr:`extensions` and implement :meth:`accepts`,
    :meth:`read` and :meth:`collate`; :meth:`read_records` is for decoders of in-memory values
    (texts). Nothing here may import torch. Errors are :class:`DecodeError` naming the file
    (and line) at fault.

    Example::

        class PointCloudDecoder(FileDecoder):
            kind = "points"
            extensions = (".xyz",)

            @classmethod
            def accepts(cls, model):
                return model.input_names == ("points",)

            def read(self, path):
                yield str(path), np.loadtxt(path, dtype=np.float32, ndmin=2)

            def collate(self, samples):
                return {"points": np.stack(samples)}  # float32 [B, N, 3]
    """

    #: The kind of input, shown to users (``image``, ``text``, ``audio``).
    kind: ClassVar[str] = ""
    #: The file extensions read, lower case with the dot.
    extensions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: ModelInputs):
        self.model = model

    @classmethod
    def accepts(cls, model: ModelInputs) -> bool:
        """Whether this decoder makes ``model``'s inputs (by its input names and preprocessing)."""
        raise NotImplementedError

    def read(self, path: Path) -> Iterator[tuple[str, Any]]:
        """The samples in one file, each with its source (``path``, or ``path:line`` for several per file)."""
        raise NotImplementedError

    def read_records(self, records: Sequence[Any]) -> list[Any]:
        """Samples from in-memory values (a text decoder takes strings); by default files only."""
        raise DecodeError(f"the {self.kind or type(self).__name__} decoder reads files only, not in-memory values")

    def collate(self, samples: list[Any]) -> dict[str, np.ndarray]:
        """One batch of the model's inputs from samples :meth:`read` made: input name -> array ``[B, ...]``."""
        raise NotImplementedError


@dataclass(frozen=True)
class RegisteredDecoder:
    """A decoder class found in the ``sslhub.files`` group, with where it came from."""

    name: str
    decoder: type[FileDecoder]
    distribution: str


def installed_decoders(*, strict: bool | None = None, blocked: Sequence[str] = ()) -> list[RegisteredDecoder]:
    """The decoders of the ``sslhub.files`` entry-point group, by name; loading imports no torch.

    A decoder that does not load (or is not a :class:`FileDecoder` subclass) is left out with
    a warning naming the entry point, its distribution and why, as a plugin that fails to load
    is: one broken decoder must not stop every other modality's files. A blocked plugin's
    decoders are left out too (see :func:`blocked_decoder_names`), so that blocking a plugin
    also stops its files from being read.

    Args:
        strict: raise instead of warning; ``None``: when ``SSLHUB_STRICT_PLUGINS`` is on.
        blocked: plugin, decoder or distribution names blocked besides ``SSLHUB_DISABLE_PLUGINS``
            (``-p no:NAME``).

    Raises:
        DecodeError: in strict mode, a decoder that does not load.
    """
    if strict is None:
        strict = strict_from_env()
    entry_points = sorted(importlib.metadata.entry_points(group=FILE_DECODER_GROUP), key=lambda e: e.name)
    left_out = blocked_decoder_names(entry_points, blocked)
    found = []
    for entry_point in entry_points:
        if entry_point.name in left_out:
            continue
        distribution = entry_point.dist.name if entry_point.dist is not None else "unknown distribution"
        where = f"file decoder {entry_point.name!r} ({entry_point.value}, from {distribution})"
        try:
            decoder = entry_point.load()
            if not (isinstance(decoder, type) and issubclass(decoder, FileDecoder)):
                raise TypeError("it is not a sslhub.FileDecoder subclass")
        except Exception as error:  # a broken plugin must be named, whatever it raised
            problem = f"{where} failed to load: {type(error).__name__}: {error}"
            if strict:
                raise DecodeError(problem) from error
            logger.warning("%s; its files cannot be read", problem)
            continue
        found.append(RegisteredDecoder(entry_point.name, decoder, distribution))
    return found


def blocked_decoder_names(
    entry_points: Sequence[importlib.metadata.EntryPoint], blocked: Sequence[str] = ()
) -> set[str]:
    """Names of the decoders whose plugin is blocked by ``SSLHUB_DISABLE_PLUGINS`` or ``blocked``.

    A name blocks a decoder when it is the decoder's entry-point name, its distribution's name,
    or the name of a plugin in the ``sslhub`` group whose top-level package holds the decoder
    (``vision`` blocks ``sslhub_vision.files:ImageDecoder``). Nothing is imported to find out.
    """
    names = disabled_plugins() | set(blocked)
    if not names:
        return set()
    blocked_packages = {
        _top_package(plugin)
        for plugin in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if plugin.name in names
    }
    return {
        e.name
        for e in entry_points
        if e.name in names or (e.dist is not None and e.dist.name in names) or _top_package(e) in blocked_packages
    }


def _top_package(entry_point: importlib.metadata.EntryPoint) -> str:
    """The top-level package of what an entry point names (``sslhub_vision.files:ImageDecoder`` -> ``sslhub_vision``)."""
    return entry_point.value.split(":")[0].split(".")[0]


def choose_decoder(model: ModelInputs, registered: Sequence[RegisteredDecoder]) -> FileDecoder | None:
    """The one registered decoder that accepts ``model``, made for it; ``None`` when none does.

    Raises:
        DecodeError: several accept the model (their plugins clash), or one fails to answer.
    """
    accepting = []
    for entry in registered:
        try:
            if entry.decoder.accepts(model):
                accepting.append(entry)
        except Exception as error:
            raise DecodeError(
                f"file decoder {entry.name!r} (from {entry.distribution}) failed to check the model's inputs "
                f"{list(model.input_names)}: {type(error).__name__}: {error}"
            ) from error
    if len(accepting) > 1:
        names = ", ".join(f"{e.name!r} (from {e.distribution})" for e in accepting)
        raise DecodeError(f"several file decoders accept inputs {list(model.input_names)}: {names}; uninstall one")
    return accepting[0].decoder(model) if accepting else None
