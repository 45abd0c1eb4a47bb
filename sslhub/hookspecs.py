"""The hooks a plugin may implement.

A plugin is a module with functions marked ``@sslhub.hookimpl`` whose names are hook names
below. It is found through the ``sslhub`` entry-point group::

    [project.entry-points.sslhub]
    myplugin = "my_package.plugin"

or loaded for one run with ``sslhub run RECIPE -p my_module``. Each ``register`` hook receives
the registry of its kind; everything the plugin registers there is attributed to it, so
clashes and errors name the plugin, its distribution and version. ``sslhub_export_encoder``
lets a plugin take over the ONNX export of encoders the built-in exporter cannot capture, and
``sslhub_register_callbacks`` lets it receive training events (a logger, an online probe).

File decoding for ``sslhub embed`` / ``sslhub predict`` is not a hook: those commands import
no torch, so decoders are :class:`sslhub.FileDecoder` classes in torch-free modules, found
through an entry-point group of their own (see :mod:`sslhub.files`)::

    [project.entry-points."sslhub.files"]
    points = "my_package.files:PointCloudDecoder"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from torch import Tensor

    from sslhub.callbacks import CallbackRegistry
    from sslhub.components import Encoder
    from sslhub.registry import ScopedRegistry

PROJECT_NAME = "sslhub"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def sslhub_register_modalities(registry: ScopedRegistry) -> None:
    """Register modalities: how samples are found, decoded, batched and fed to encoders.

    Called once per :class:`sslhub.Catalog`, before recipes are resolved.

    Args:
        registry: the modality registry. Call ``registry.register(name, factory,
            params=ParamsModel)``; ``factory(params, context)`` returns a
            :class:`sslhub.Modality`. ``params`` holds everything under the recipe's
            ``data:`` section except ``modality``. ``provides`` lists the modality capabilities
            it implements (``word_continuations``: ``continuation_token_ids()``), which
            validation checks against what components need (``Params.modality_needs()``).
            A composite modality lists its parts in ``modalities`` (``["image", "text"]``): it
            builds each with ``context.part(name, params)``, components of its parts accept
            it, and validation reports a part no loaded plugin registers.

    Example::

        @hookimpl
        def sslhub_register_modalities(registry):
            registry.register("image", ImageModality, params=ImageParams)
            registry.register("image_text", ImageTextModality, params=ImageTextParams, modalities=["image", "text"])
    """


@hookspec
def sslhub_register_augmentations(registry: ScopedRegistry) -> None:
    """Register augmentations: batched, device-side transforms that make random views.

    Args:
        registry: the augmentation registry. Call ``registry.register(name, factory,
            params=ParamsModel, modalities=["image"])``; ``factory(params, context)`` returns
            a :class:`sslhub.Augmentation`. ``modalities`` lists the modalities it accepts, so
            a recipe pairing it with another modality fails validation in words.

    Example::

        @hookimpl
        def sslhub_register_augmentations(registry):
            registry.register("horizontal_flip", HorizontalFlip, params=FlipParams, modalities=["image"])
    """


@hookspec
def sslhub_register_encoders(registry: ScopedRegistry) -> None:
    """Register encoders: modules from a modality batch to pooled (and token/spatial) features.

    Args:
        registry: the encoder registry. Call ``registry.register(name, factory,
            params=ParamsModel, modalities=[...], provides=["pooled", "tokens"])``;
            ``factory(params, context)`` returns a :class:`sslhub.Encoder`, and may read
            ``context.modality.info()`` (a :class:`sslhub.ModalityInfo`: channels, vocabulary size) to size itself.
            ``provides`` lists the features it returns (``pooled``, ``tokens``, ``spatial``)
            and the properties it has: ``causal`` when no output position depends on later
            inputs, ``token_embeddings`` when it has a token embedding table that
            ``get_input_embeddings()`` returns, ``frame_masking`` when it offers ``count_frames(batch)``,
            ``embed_frames(batch)`` (local features ``[B, T', D]`` before its context network)
            and ``transform_frames(frames)`` (the context network), so an objective can put a
            mask embedding in between, ``frame_layers`` when it offers ``num_context_layers`` and
            ``hidden_frames(batch, layer)`` (the frames after one context layer),
            ``patch_masking`` when it offers ``patch_layout()``,
            ``encode_patches(image, ids_keep)`` (only the kept patches) and
            ``set_patch_positions(codes, trainable)``, as ``mae`` needs (the built encoder's
            ``provides`` must say the same).

    Example::

        @hookimpl
        def sslhub_register_encoders(registry):
            registry.register("timm", TimmEncoder, params=TimmParams, modalities=["image"],
                              provides=["pooled", "spatial"])
    """


@hookspec
def sslhub_register_objectives(registry: ScopedRegistry) -> None:
    """Register objectives: pretext tasks that corrupt inputs, run heads and return a loss.

    Args:
        registry: the objective registry. Call ``registry.register(name, factory,
            params=ParamsModel, modalities=[...], requires=["tokens"])``;
            ``factory(params, context)`` returns a :class:`sslhub.Objective` and finds the
            built encoder at ``context.encoder``. ``requires`` names the encoder features
            (``tokens``, ``spatial``) and properties (``causal``, ``token_embeddings``, ``frame_masking``, ``patch_masking``) it needs, checked against the
            encoder's ``provides`` by ``sslhub validate``, before anything is built.
            The recipe keys ``name``, ``weight`` and ``start_step`` belong to the engine and
            are not passed in ``params``.

    Example::

        @hookimpl
        def sslhub_register_objectives(registry):
            registry.register("simclr", SimCLRObjective, params=SimCLRParams, modalities=["image"])
    """


@hookspec(firstresult=True)
def sslhub_export_encoder(
    encoder: Encoder,
    example_inputs: tuple[Tensor, ...],
    dynamic_axes: dict[str, dict[int, str]],
    out_path: Path,
    opset: int,
) -> bool | None:
    """Write the ONNX file of an encoder that ``torch.onnx.export`` cannot capture.

    Called by ``sslhub export`` (and the recipe's ``export:`` section) for every encoder before
    the built-in exporter; the first implementation returning ``True`` wins, ``None`` passes
    the encoder on. An encoder class may instead define ``export_onnx(out_path,
    example_inputs, opset)``; the hook is for plugins exporting encoders they do not own.

    Whatever writes the file, sslhub then names the dynamic axes, stores the metadata and
    verifies it against PyTorch exactly as for its own exports.

    Args:
        encoder: the encoder in eval mode, on the CPU, in float32.
        example_inputs: one example batch, the tensors of ``encoder.input_names`` in order.
        dynamic_axes: ``{input_name: {axis: axis_name}}``; axis 0 of every input is the batch.
        out_path: the ``.onnx`` file to write. Its graph inputs must be named
            ``encoder.input_names`` in order; its first output is the pooled embedding
            ``[batch, feature_dim]``. Weights may sit in a file beside it.
        opset: the ONNX opset asked for.

    Returns:
        ``True`` if the file was written, ``None`` to leave the encoder to others.

    Example::

        @hookimpl
        def sslhub_export_encoder(encoder, example_inputs, dynamic_axes, out_path, opset):
            if not isinstance(encoder, MyStatefulEncoder):
                return None
            torch.onnx.export(encoder.stateless_module(), example_inputs, str(out_path),
                              dynamo=False, opset_version=opset,
                              input_names=list(encoder.input_names), output_names=["pooled"],
                              dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()})
            return True
    """


@hookspec
def sslhub_register_callbacks(registry: CallbackRegistry) -> None:
    """Add callbacks that receive the training events of a run (a logger, an online probe).

    Called once per ``sslhub run`` (on every process of a distributed run), after the
    components are built and before the first step. The progress bar, ``metrics.jsonl``,
    TensorBoard and the non-finite policy are callbacks of the same kind, added before the
    plugins' ones. A callback subclasses :class:`sslhub.Callback` and overrides any of:

    - ``on_train_start(run, TrainStart)``: ``start_step`` (above 0 after a resume), ``total_steps``;
    - ``on_step_end(run, StepEnd)``: ``step``, ``epoch``, ``loss``, ``grad_norm``, ``lr``,
      ``skipped``, and ``metrics``, the ``metrics.jsonl`` record (every objective's loss and
      metrics as floats), on logging steps (``train.log_every``) only, so no step waits for
      the device on a callback's behalf;
    - ``on_nonfinite(run, NonFiniteStep)``: a non-finite loss or gradient; raise
      ``sslhub.NonFiniteLossError`` to stop, return to skip the step;
    - ``on_validation(run, ValidationDone)``: ``step``, ``epoch`` and ``metrics`` (``val_loss``,
      the held-out total objective loss, and ``val_OBJECTIVE/METRIC``) of a held-out validation,
      every ``train.validate_every`` steps, the same figures on every rank; ``save_best()``
      writes the current weights to ``checkpoints/best.pt``;
    - ``on_checkpoint(run, CheckpointSaved)``: ``step`` and ``path`` of a checkpoint written;
    - ``on_train_end(run, TrainEnd)``: ``status`` ``completed``, ``interrupted`` or ``failed``,
      and ``stop``, the :class:`sslhub.StopRequest` when a callback ended training early;
    - ``on_evaluation(run, EvaluationDone)``: the ``evaluation.json`` report, after training.

    ``run`` is a :class:`sslhub.RunInfo` (``run_dir``, ``name``, ``recipe``, ``device``,
    ``rank``, ``world_size``, ``resumed``). An exception from a callback stops the run with an
    error naming the plugin.

    To end training early (a plugin's own stopping rule), call
    ``run.request_stop("why", **details)`` from any event: the loop finishes the current step,
    saves a checkpoint of it, records a ``stopped`` event with the reason and details in
    ``events.jsonl`` and goes on to evaluation and export. Under torchrun a request on any
    rank stops every rank at the same step. Built-in early stopping (``train.early_stopping``)
    is a callback doing exactly this. A callback whose decisions depend on what it saw
    (a patience counter) returns that from ``state_dict()`` and takes it back in
    ``load_state_dict(state)``: it is saved in every checkpoint, so a resumed run decides as an
    uninterrupted one.

    Args:
        registry: a :class:`sslhub.CallbackRegistry`; ``registry.run`` is the run's
            :class:`sslhub.RunInfo`. Call ``registry.add(callback)`` (rank 0 only) or
            ``registry.add(callback, every_rank=True)``.

    Example::

        class PrintLoss(sslhub.Callback):
            def on_step_end(self, run, event):
                if event.metrics is not None:
                    print(event.step, event.loss, event.lr)

        @hookimpl
        def sslhub_register_callbacks(registry):
            registry.add(PrintLoss())
    """
