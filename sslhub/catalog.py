"""The Catalog: one registry per kind, filled by plugins that are loaded one at a time.

Each Catalog owns its own pluggy ``PluginManager``; nothing is global, so tests and
programs can build as many catalogs as they like with different plugin sets.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from sslhub import hookspecs
from sslhub.blame import extra_hint
from sslhub.plugin_env import ENTRY_POINT_GROUP, disabled_plugins, strict_from_env
from sslhub.python_api import pending_registrations
from sslhub.registry import KINDS, Component, Provider, Registry, RegistryError, ScopedRegistry

log = logging.getLogger("sslhub")

_P_TAKES = "-p takes a module name (my_package.plugin) or a path to a .py file (./my_plugin.py)"
HOOK_FOR_KIND = {
    "modality": "sslhub_register_modalities",
    "augmentation": "sslhub_register_augmentations",
    "encoder": "sslhub_register_encoders",
    "objective": "sslhub_register_objectives",
}
HOOK_NAMES = frozenset(
    name for name in dir(hookspecs) if name.startswith("sslhub_") and callable(getattr(hookspecs, name))
)


class PluginError(Exception):
    """Plugins failed to load while strict mode (``SSLHUB_STRICT_PLUGINS=1``) is on."""


@dataclass
class PluginRecord:
    """What ``sslhub plugins`` shows about one plugin."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    source: str = "entry point"
    #: the file a ``-p`` module was imported from (recorded so a run can say where to find it again).
    origin: str = ""
    hooks: list[str] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: problems that do not stop the plugin from loading (a hook-named function without the marker).
    warnings: list[str] = field(default_factory=list)
    blocked: bool = False

    @property
    def provider(self) -> Provider:
        return Provider(self.name, self.distribution, self.version)

    def label(self) -> str:
        if self.distribution:
            return f"plugin '{self.name}' ({self.distribution} {self.version})"
        return f"plugin '{self.name}' (module {self.module})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "source": self.source,
            "origin": self.origin,
            "blocked": self.blocked,
            "hooks": sorted(self.hooks),
            "components": [f"{c.kind}:{c.name}" for c in self.components],
            "errors": self.errors,
            "warnings": self.warnings,
        }


class Catalog:
    """Registries of modalities, augmentations, encoders and objectives, plus the plugins behind them.

    Build one with :meth:`Catalog.load`. Attributes ``modalities``, ``augmentations``,
    ``encoders`` and ``objectives`` are :class:`sslhub.Registry` objects.
    """

    def __init__(self) -> None:
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self.registries: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}
        self.plugins: list[PluginRecord] = []
        #: the ``-p`` arguments :meth:`load` was given (recorded in a run's environment.json).
        self.load_args: list[str] = []
        #: ``-p no:NAME`` arguments that name no installed plugin.
        self.block_problems: list[str] = []

    def export_with_plugins(
        self,
        encoder: Any,
        example_inputs: tuple[Any, ...],
        dynamic_axes: dict[str, dict[int, str]],
        out_path: Path,
        opset: int,
    ) -> str | None:
        """Offer an encoder to the plugins' ``sslhub_export_encoder`` hooks, newest first.

        Returns:
            The name of the plugin that wrote ``out_path``, or ``None`` if none took it.

        Raises:
            PluginError: a hook raised; the message names the plugin.
        """
        caller = self.plugin_manager.hook.sslhub_export_encoder
        for impl in reversed(caller.get_hookimpls()):
            try:
                done = impl.function(
                    encoder=encoder,
                    example_inputs=example_inputs,
                    dynamic_axes=dynamic_axes,
                    out_path=out_path,
                    opset=opset,
                )
            except Exception as exc:
                raise PluginError(
                    f"plugin '{impl.plugin_name}': sslhub_export_encoder raised {_describe(exc)}"
                ) from exc
            if done:
                return impl.plugin_name
        return None

    modalities = property(lambda self: self.registries["modality"])
    augmentations = property(lambda self: self.registries["augmentation"])
    encoders = property(lambda self: self.registries["encoder"])
    objectives = property(lambda self: self.registries["objective"])

    @classmethod
    def load(
        cls,
        plugins: list[str] | tuple[str, ...] = (),
        *,
        entry_points: bool = True,
        python_registrations: bool = True,
        strict: bool | None = None,
    ) -> Catalog:
        """Build a catalog from installed entry points and extra plugin modules.

        Args:
            plugins: ``-p`` arguments: a module name or a path to a ``.py`` file to load as a
                plugin, or ``no:NAME`` to block an installed entry-point plugin or distribution
                (``SSLHUB_DISABLE_PLUGINS=a,b`` blocks too).
            entry_points: load the ``sslhub`` entry-point group (off in isolated tests).
            python_registrations: include components queued with ``sslhub.objectives.register``.
            strict: ``True``: raise :class:`PluginError` on any plugin problem; ``None`` (the
                default): the same when ``SSLHUB_STRICT_PLUGINS`` is on, and otherwise only for
                what ``plugins`` names (a module that does not load, an unknown ``no:`` name);
                ``False``: never raise (the problems stay in :meth:`problems` and
                :meth:`explicit_problems`).
        """
        catalog = cls()
        catalog.load_args = list(plugins)
        blocked_by_p = [spec[3:] for spec in plugins if spec.startswith("no:")]
        blocked = disabled_plugins() | set(blocked_by_p)
        if entry_points:
            for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                catalog._load_entry_point(entry_point, blocked)
            catalog._check_blocked_names(blocked_by_p)
        for spec in plugins:
            if not spec.startswith("no:"):
                catalog._load_module(spec)
        catalog._call_register_hooks()
        if python_registrations:
            catalog._add_python_registrations()
        catalog._note_unavailable_plugins()
        catalog._raise_problems(strict)
        return catalog

    def _raise_problems(self, strict: bool | None) -> None:
        """Strict mode: any plugin problem raises. Otherwise a plugin named with ``-p`` must load.

        ``strict=False`` never raises, for listings such as ``sslhub plugins`` that show the problems.
        """
        if strict is False:
            return
        if strict or strict_from_env():
            problems = self.problems() + self.block_problems
            if problems:
                raise PluginError(
                    "plugin problems (SSLHUB_STRICT_PLUGINS is on):\n" + "\n".join(f"  {p}" for p in problems)
                )
        explicit = self.explicit_problems()
        if explicit:
            count = "a -p argument" if len(explicit) == 1 else f"{len(explicit)} -p arguments"
            raise PluginError(f"{count} failed:\n" + "\n".join(f"  {p}" for p in explicit))

    def explicit_problems(self) -> list[str]:
        """Problems of what the user named with ``-p``: modules that did not load, unknown ``no:`` names."""
        failed = [f"{r.label()}: {error}" for r in self.plugins if r.source == "-p" for error in r.errors]
        return failed + self.block_problems

    def _check_blocked_names(self, names: list[str]) -> None:
        """``-p no:NAME`` must name an installed entry point or distribution: a typo would block nothing."""
        known = sorted({r.name for r in self.plugins} | {r.distribution for r in self.plugins if r.distribution})
        for name in names:
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=3)
            hint = (
                f"did you mean {' or '.join(repr(c) for c in close)}?"
                if close
                else f"installed: {', '.join(known) or 'none'}"
            )
            self.block_problems.append(f"-p no:{name}: no installed plugin is named '{name}'; {hint}")

    @classmethod
    def from_modules(cls, *modules: ModuleType | object, name_prefix: str = "") -> Catalog:
        """A catalog with only the given plugin objects (modules or instances with hookimpls)."""
        catalog = cls()
        for module in modules:
            name = name_prefix + getattr(module, "__name__", type(module).__name__)
            record = PluginRecord(name=name, module=name, source="object")
            catalog.plugins.append(record)
            catalog._register_plugin(module, record)
        catalog._call_register_hooks()
        return catalog

    def _note_unavailable_plugins(self) -> None:
        """Tell every registry which plugins were blocked or failed, for its unknown-name messages.

        Built-in plugins blocked all at once (``SSLHUB_DISABLE_PLUGINS=sslhub``) are summarised
        in one entry per distribution.
        """
        notes: list[str] = []
        blocked_by_dist: dict[str, list[str]] = {}
        for record in self.plugins:
            if record.blocked:
                blocked_by_dist.setdefault(record.distribution or record.module, []).append(record.name)
            elif record.errors and not record.components:
                notes.append(f"{record.label()} failed to load")  # its errors: `sslhub plugins`
        for dist, names in blocked_by_dist.items():
            listed = ", ".join(f"'{n}'" for n in sorted(names))
            notes.append(
                f"plugin{'s' if len(names) > 1 else ''} {listed} of {dist} {'are' if len(names) > 1 else 'is'} blocked"
            )
        for registry in self.registries.values():
            registry.unavailable = list(notes)

    def problems(self) -> list[str]:
        return [f"{record.label()}: {error}" for record in self.plugins for error in record.errors]

    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def plugin_for(self, name: str) -> PluginRecord | None:
        return next((record for record in self.plugins if record.name == name), None)

    # -- loading -------------------------------------------------------------------

    def _load_entry_point(self, entry_point: importlib.metadata.EntryPoint, blocked: set[str]) -> None:
        dist = getattr(entry_point, "dist", None)
        record = PluginRecord(
            name=entry_point.name,
            module=entry_point.value,
            distribution=dist.metadata["Name"] if dist is not None else "",
            version=dist.version if dist is not None else "",
        )
        self.plugins.append(record)
        if entry_point.name in blocked or record.distribution in blocked:
            record.blocked = True
            return
        incompatible = _incompatible_sslhub(dist)
        if incompatible:
            record.errors.append(incompatible)
            return
        if self.plugin_manager.has_plugin(entry_point.name):
            record.errors.append(f"another plugin is already registered under the name '{entry_point.name}'")
            return
        try:
            plugin = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
            record.errors.append(f"failed to import {entry_point.value}: {_describe(exc)}{extra_hint(exc, dist)}")
            _log_traceback(record, exc)
            return
        self._register_plugin(plugin, record)

    def _load_module(self, spec: str) -> None:
        """Load a ``-p`` plugin: a dotted module name, or a path to a ``.py`` file."""
        if spec.endswith(".py") or "/" in spec or os.sep in spec:
            self._load_file(spec)
            return
        record = PluginRecord(name=spec, module=spec, source="-p")
        self.plugins.append(record)
        if not all(part.isidentifier() for part in spec.split(".")):
            record.errors.append(f"'{spec}' is not a module name; {_P_TAKES}")
            return
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(spec)
        except Exception as exc:  # noqa: BLE001
            record.errors.append(f"failed to import module '{spec}' given with -p: {_describe(exc)}")
            _log_traceback(record, exc)
            return
        self._register_module(module, record)

    def _load_file(self, spec: str) -> None:
        """Import ``-p path/to/name.py`` as module ``name``, with its folder on ``sys.path`` for its own imports."""
        path = Path(spec).expanduser()
        record = PluginRecord(name=path.stem, module=spec, source="-p")
        self.plugins.append(record)
        if path.suffix != ".py":
            record.errors.append(f"'{spec}' is not a module name; {_P_TAKES}")
            return
        if not path.is_file():
            record.errors.append(f"no such file '{spec}' given with -p")
            return
        if not path.stem.isidentifier():
            record.errors.append(f"'{spec}': the file name must be a Python identifier to import it as a module")
            return
        path = path.resolve()
        existing = sys.modules.get(path.stem)
        if existing is not None:
            if Path(getattr(existing, "__file__", None) or "").resolve() != path:
                record.errors.append(
                    f"'{spec}': another module named '{path.stem}' is already imported "
                    f"({getattr(existing, '__file__', None) or 'built in'}); rename the file"
                )
                return
            self._register_module(existing, record)
            return
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001
            del sys.modules[path.stem]
            record.errors.append(f"failed to import '{spec}' given with -p: {_describe(exc)}")
            _log_traceback(record, exc)
            return
        self._register_module(module, record)

    def _register_module(self, module: ModuleType, record: PluginRecord) -> None:
        record.origin = str(Path(module.__file__).resolve()) if getattr(module, "__file__", None) else ""
        if self.plugin_manager.is_registered(module):
            return
        self._register_plugin(module, record)

    def _register_plugin(self, plugin: object, record: PluginRecord) -> None:
        record.warnings.extend(_unmarked_hooks(plugin))
        for warning in record.warnings:
            log.warning("%s: %s", record.label(), warning)
        misspelt = [
            name
            for name in dir(plugin)
            if name.startswith("sslhub_")
            and callable(getattr(plugin, name, None))
            and hasattr(getattr(plugin, name), f"{hookspecs.PROJECT_NAME}_impl")
            and name not in HOOK_NAMES
        ]
        if misspelt:
            known = ", ".join(sorted(HOOK_NAMES))
            record.errors.append(f"unknown hook {', '.join(misspelt)}; known hooks: {known}")
            return
        try:
            self.plugin_manager.register(plugin, name=record.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            record.errors.append(f"invalid hook implementation: {exc}")
            return
        record.hooks = sorted(
            caller.name for caller in self.plugin_manager.get_hookcallers(plugin) or [] if caller.name in HOOK_NAMES
        )

    def _call_register_hooks(self) -> None:
        records = {record.name: record for record in self.plugins}
        for kind in KINDS:
            hook = getattr(self.plugin_manager.hook, HOOK_FOR_KIND[kind])
            # Call each implementation on its own so registrations (and failures) are
            # attributed to the plugin that made them.
            for impl in reversed(hook.get_hookimpls()):
                record = records[impl.plugin_name]
                scoped = ScopedRegistry(self.registries[kind], record.provider, record.components)
                try:
                    impl.function(registry=scoped)
                except RegistryError as exc:
                    record.errors.append(str(exc))
                except Exception as exc:  # noqa: BLE001
                    record.errors.append(f"{HOOK_FOR_KIND[kind]} raised {_describe(exc)}")
                    _log_traceback(record, exc)

    def _add_python_registrations(self) -> None:
        for pending in pending_registrations():
            module = getattr(pending.factory, "__module__", "python")
            record = self.plugin_for(module)
            if record is None:
                record = PluginRecord(name=module, module=module, source="python")
                self.plugins.append(record)
            scoped = ScopedRegistry(self.registries[pending.kind], record.provider, record.components)
            try:
                scoped.register(pending.name, pending.factory, **dict(pending.options))
            except RegistryError as exc:
                record.errors.append(str(exc))


def _incompatible_sslhub(dist: importlib.metadata.Distribution | None) -> str:
    """A message if the plugin's distribution declares an sslhub range this sslhub is outside of."""
    from packaging.requirements import InvalidRequirement, Requirement

    from sslhub import __version__

    for text in (dist.requires or []) if dist is not None else []:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.name.lower() != "sslhub" or requirement.marker is not None:
            continue
        if requirement.specifier and not requirement.specifier.contains(__version__, prereleases=True):
            return (
                f"needs sslhub{requirement.specifier}, but sslhub {__version__} is installed; "
                f"install a {dist.metadata['Name']} release made for sslhub {__version__}"
            )
    return ""


def _unmarked_hooks(plugin: object) -> list[str]:
    """Functions named like a hook but without ``@sslhub.hookimpl``: pluggy ignores them silently."""
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    return [
        f"function {name}() is named like a hook but is not marked with @sslhub.hookimpl, so it is never "
        "called; decorate it"
        for name in sorted(HOOK_NAMES)
        if callable(getattr(plugin, name, None)) and not hasattr(getattr(plugin, name), marker)
    ]


def _log_traceback(record: PluginRecord, exc: BaseException) -> None:
    """The plugin's own traceback, shown with ``--debug`` (the error line alone names only the last frame)."""
    if log.isEnabledFor(logging.DEBUG):
        text = "".join(traceback.format_exception(exc))
        log.debug("%s failed; its traceback:\n%s", record.label(), text.rstrip())


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
