"""One flat registry per component kind: name -> factory, Params model and declared needs."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sslhub.components import CAPABILITIES, MODALITY_PROPERTIES, Params

KINDS = ("modality", "augmentation", "encoder", "objective")
KIND_PLURALS = {
    "modality": "modalities",
    "augmentation": "augmentations",
    "encoder": "encoders",
    "objective": "objectives",
}


class RegistryError(Exception):
    """A component could not be registered or looked up; the message says why and where."""


@dataclass(frozen=True)
class Provider:
    """The plugin a component came from."""

    plugin: str
    distribution: str = ""
    version: str = ""

    def __str__(self) -> str:
        if self.distribution:
            return f"plugin '{self.plugin}' ({self.distribution} {self.version})".replace(" )", ")")
        return f"plugin '{self.plugin}'"


@dataclass(frozen=True)
class Component:
    """One registered component.

    Attributes:
        kind: ``modality``, ``augmentation``, ``encoder`` or ``objective``.
        name: the key a recipe uses.
        factory: ``factory(params, context)`` returning the component.
        params: the pydantic model of its parameters.
        modalities: modalities it works with; empty means any. For a modality, the parts its
            batches hold (``image_text`` lists ``image`` and ``text``).
        requires: encoder capabilities an objective needs: features (``tokens``, ``spatial``) or
            properties (``causal``).
        provides: capabilities an encoder declares: features it returns (``pooled`` always) and
            properties it has (``causal``); for a modality, the modality capabilities it
            implements (``word_continuations``).
        encoder_slots: for objectives that use several encoders at once (CLIP), the recipe
            ``encoders:`` keys they need; they receive an :class:`sslhub.EncoderSet`.
        description: one line for ``sslhub list``.
        provider: the plugin that registered it.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[Params]
    modalities: frozenset[str] = frozenset()
    requires: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset({"pooled"})
    encoder_slots: frozenset[str] = frozenset()
    description: str = ""
    provider: Provider = field(default_factory=lambda: Provider("unknown"))

    @property
    def qualname(self) -> str:
        module = getattr(self.factory, "__module__", "?")
        qual = getattr(self.factory, "__qualname__", repr(self.factory))
        return f"{module}:{qual}"

    def supports(self, modality: str) -> bool:
        return not self.modalities or modality in self.modalities


class Registry:
    """Components of one kind. Names are unique: a second registration is refused."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self._components: dict[str, Component] = {}
        #: names some known-but-absent plugin would provide, for friendlier lookup errors.
        self.hints: dict[str, str] = {}
        #: plugins that were blocked or failed to load ("plugin 'x' (dist 1.0) failed to load"),
        #: named in lookup errors because one of them may provide the missing name.
        self.unavailable: list[str] = []

    def register(
        self,
        name: str,
        factory: Callable[..., Any] | None = None,
        *,
        params: type[Params] = Params,
        modalities: Iterable[str] = (),
        requires: Iterable[str] = (),
        provides: Iterable[str] = ("pooled",),
        encoders: Iterable[str] = (),
        description: str = "",
        provider: Provider | None = None,
    ) -> Any:
        """Register ``factory`` under ``name``; without ``factory``, return a decorator.

        Args:
            name: snake_case key used in recipes.
            factory: callable ``factory(params, context)``; a class works.
            params: pydantic model (subclass of :class:`sslhub.Params`) of its parameters.
            modalities: modalities it accepts; empty for any.
            requires: for objectives, encoder capabilities needed (``tokens``/``spatial``
                features, the ``causal`` property).
            provides: for encoders, features returned and properties held (``causal``); for
                modalities, the modality capabilities they implement (``word_continuations``).
            encoders: for objectives needing several encoders at once, the ``encoders:`` keys
                they use (``["image", "text"]`` for CLIP).
            description: one line shown by ``sslhub list``; defaults to the docstring's first line.
            provider: set by the plugin manager; plugin code leaves it out.
        """
        if factory is None:  # used as a decorator
            options = dict(
                params=params, modalities=modalities, requires=requires, provides=provides, encoders=encoders
            )
            return lambda func: self.register(name, func, description=description, provider=provider, **options)
        provider = provider or Provider("python")
        self._check_registration(name, factory, params, (*requires, *provides), provider)
        if not description:
            doc = inspect.getdoc(factory) or ""
            description = doc.splitlines()[0] if doc else ""
        self._components[name] = Component(
            kind=self.kind,
            name=name,
            factory=factory,
            params=params,
            modalities=frozenset(modalities),
            requires=frozenset(requires),
            provides=frozenset(provides) | {"pooled"},
            encoder_slots=frozenset(encoders),
            description=description,
            provider=provider,
        )
        return factory

    def _check_registration(
        self, name: Any, factory: Any, params: Any, capabilities: tuple[str, ...], provider: Provider
    ) -> None:
        """A registration a plugin got wrong is refused with a message that names the plugin."""
        if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
            raise RegistryError(
                f"{provider} tried to register {self.kind} {name!r}: names must be snake_case identifiers"
            )
        if not callable(factory):
            raise RegistryError(f"{provider} registered {self.kind} '{name}' with a non-callable factory")
        if not (isinstance(params, type) and issubclass(params, Params)):
            raise RegistryError(
                f"{provider} registered {self.kind} '{name}' with params={params!r}; "
                "it must be a subclass of sslhub.Params"
            )
        # a modality declares modality capabilities; "pooled" is every registration's default
        allowed = ("pooled", *MODALITY_PROPERTIES) if self.kind == "modality" else CAPABILITIES
        for feature in capabilities:
            if feature not in allowed:
                raise RegistryError(
                    f"{provider} registered {self.kind} '{name}' with unknown capability {feature!r}; "
                    f"expected one of {', '.join(allowed)}"
                )
        if name in self._components:
            existing = self._components[name]
            raise RegistryError(
                f"{self.kind} '{name}' is registered twice: by {existing.provider} and by {provider}; "
                "block one with -p no:PLUGIN or SSLHUB_DISABLE_PLUGINS"
            )

    def get(self, name: str) -> Component:
        """The component called ``name``, or a :class:`RegistryError` naming close matches."""
        try:
            return self._components[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        message = f"unknown {self.kind} '{name}'"
        if name in self.hints:
            return f"{message}; it is provided by {self.hints[name]}, which is not installed or failed to load"
        close = difflib.get_close_matches(str(name), list(self._components), n=3, cutoff=0.5)
        if close:
            # A near miss is most likely a typo: plugins that did not load are not the point.
            return message + "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        if self._components:
            message += f"; known: {', '.join(sorted(self._components))}"
        else:
            message += f"; no {KIND_PLURALS[self.kind]} are registered (is a plugin missing?)"
        if len(self.unavailable) == 1:
            message += f"; {self.unavailable[0]} and may provide it (see `sslhub plugins`)"
        elif self.unavailable:
            message += f"; these may provide it: {'; '.join(self.unavailable)} (see `sslhub plugins`)"
        return message

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._components if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def __iter__(self) -> Iterator[Component]:
        return iter(self._components[n] for n in sorted(self._components))

    def __len__(self) -> int:
        return len(self._components)


class ScopedRegistry:
    """What a plugin's hook receives: registrations are attributed to that plugin."""

    def __init__(self, registry: Registry, provider: Provider, added: list[Component]):
        self._registry = registry
        self._provider = provider
        self._added = added
        self.kind = registry.kind

    def register(self, name: str, factory: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        kwargs["provider"] = self._provider
        if factory is None:
            return lambda func: self.register(name, func, **{k: v for k, v in kwargs.items() if k != "provider"})
        result = self._registry.register(name, factory, **kwargs)
        self._added.append(self._registry.get(name))
        return result

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def names(self, pattern: str = "*") -> list[str]:
        return self._registry.names(pattern)
