"""Named extension points: one registry per kind of plug-in, looked up by the name a scenario uses.

Pipeline position: beside the scenario. A scenario names a dataset loader (``dataset.kind``), a
perception policy (``propagation.perception``), a routing policy (``propagation.routing``), a
critic (``backward.critic``) and baselines (``evaluation.baselines``); filter rule kinds are named
inside rule texts and executable forms. Each name is resolved here, in this order:

1. a name registered in this process (``BASELINES.register("mine", factory)`` or as a decorator);
2. a built-in (kept as an import path, so listing names imports nothing heavy);
3. an entry point in the registry's group (``[project.entry-points."recnet.baselines"]
   mine = "mypkg.mine:factory"``), as LLM backends do with ``recnet.backends``;
4. ``package.module:Name``, imported on the spot.

An unknown name is a ``RegistryError`` that lists the known names. The README's "Extension points"
section says, for each registry, the one file a researcher writes.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from recnet.errors import RecnetError, ScenarioError

T = TypeVar("T")


class RegistryError(ScenarioError):
    """A scenario names a plug-in no registry knows, or a plug-in failed to load."""


def import_object(spec: str, *, what: str, error: type[RecnetError] = RegistryError) -> Any:
    """Import ``package.module:Name`` (``Name`` may be dotted: ``module:Outer.Inner``)."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise error(
            f"{what} {spec!r} is not of the form 'package.module:Name'",
            "write the import path of the module, a colon, then the class or function name",
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(
            f"cannot import module {module_name!r} for {what} {spec!r}: {exc}",
            "install the package that provides it or add its folder to PYTHONPATH",
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise error(
                f"module {module_name!r} has no attribute {attr_path!r} ({what} {spec!r})",
                f"check the spelling; names defined there: {_public_names(module_name)}",
            ) from None
    return obj


def _public_names(module_name: str) -> str:
    module = importlib.import_module(module_name)
    names = sorted(n for n in vars(module) if not n.startswith("_"))
    return ", ".join(names[:20]) or "(none)"


def entry_point_names(group: str) -> list[str]:
    """Names registered by installed packages in an entry-point group."""
    return sorted(ep.name for ep in importlib.metadata.entry_points(group=group))


class Registry(Generic[T]):
    """Name → plug-in for one extension point (``option`` is the scenario key that names it)."""

    def __init__(self, option: str, group: str, builtins: dict[str, str] | None = None) -> None:
        self.option = option
        self.group = group
        self._builtins = dict(builtins or {})
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, plugin: T) -> T: ...
    def register(self, name: str, plugin: T | None = None) -> T | Callable[[T], T]:
        """Register ``plugin`` under ``name``; without ``plugin``, a decorator that does it."""
        if plugin is None:
            return lambda obj: self.register(name, obj)
        if not name or ":" in name:
            raise RegistryError(
                f"cannot register {name!r} for {self.option}",
                "use a plain name without ':' (that form is an import path)",
            )
        self._entries[name] = plugin
        return plugin

    def names(self) -> list[str]:
        """Every name this registry resolves without an import path, sorted."""
        return sorted({*self._entries, *self._builtins, *entry_point_names(self.group)})

    def ordered_names(self, *, entry_points: bool = True) -> list[str]:
        """Built-ins in their documented order, then names registered here, then entry points
        (scanning installed packages takes milliseconds: ``entry_points=False`` skips it)."""
        extra = entry_point_names(self.group) if entry_points else []
        return list(dict.fromkeys([*self._builtins, *self._entries, *extra]))

    def builtin_names(self) -> list[str]:
        """The names recnet itself ships, in their documented order."""
        return list(self._builtins)

    def knows(self, name: str) -> bool:
        """Is ``name`` a registered, built-in or entry-point name, or an import path?"""
        return (
            ":" in name
            or name in self._entries
            or name in self._builtins
            or (name in entry_point_names(self.group))
        )

    def check(self, name: str) -> str:
        """``name`` itself when known, else the error that lists the known names."""
        if not self.knows(name):
            raise self.unknown(name)
        return name

    def unknown(self, name: str) -> RegistryError:
        return RegistryError(
            f"unknown {self.option} {name!r}",
            f"use one of {', '.join(self.names())}, 'package.module:Name', or register one "
            f"(recnet.registry or the {self.group!r} entry-point group)",
        )

    def get(self, name: str) -> T:
        """The plug-in registered as ``name`` (loaded on first use)."""
        if name in self._entries:
            return self._entries[name]
        if name in self._builtins:
            plugin = import_object(self._builtins[name], what=self.option)
        elif ":" in name:
            plugin = import_object(name, what=self.option)
        else:
            group = importlib.metadata.entry_points(group=self.group)
            found = [ep for ep in group if ep.name == name]
            if not found:
                raise self.unknown(name)
            try:
                plugin = found[0].load()
            except Exception as exc:
                raise RegistryError(
                    f"entry point {name!r} in group {self.group} failed to load: {exc}",
                    "reinstall the package that registers it",
                ) from exc
        self._entries[name] = plugin
        return plugin


#: ``dataset.kind`` → ``loader(settings: DatasetSettings, seed: int) -> Dataset``
#: (``recnet.data.load.DatasetLoader``).
DATASETS: Registry[Any] = Registry(
    "dataset.kind",
    "recnet.datasets",
    {
        "movielens": "recnet.data.load:load_movielens_dataset",
        "recbole": "recnet.data.load:load_recbole_dataset",
        "synthetic": "recnet.data.load:load_synthetic_dataset",
    },
)

#: ``propagation.perception`` → a ``recnet.world.policies.PerceptionPolicy``: which router hears
#: of each changed attribute.
PERCEPTION: Registry[Any] = Registry(
    "propagation.perception",
    "recnet.perception",
    {
        "nearest_router": "recnet.world.policies:nearest_router_perception",
        "membership": "recnet.world.policies:membership_perception",
        "interaction_communities": "recnet.world.communities:interaction_communities_perception",
    },
)

#: ``propagation.routing`` → a ``recnet.world.policies.RoutingPolicy``: which clients a sender's
#: multicast reaches.
ROUTING: Registry[Any] = Registry(
    "propagation.routing",
    "recnet.routing",
    {
        "threshold": "recnet.world.policies:threshold_routing",
        "top_k": "recnet.world.policies:top_k_routing",
        "members": "recnet.world.policies:members_routing",
        "interaction_communities": "recnet.world.communities:interaction_communities_routing",
    },
)

#: Executable filter rule kinds (``kind`` of a rule's executable form) → a
#: ``recnet.world.rule_kinds.RuleKind``: its text, how to parse it back, what it decides.
FILTER_RULES: Registry[Any] = Registry(
    "filter rule kind",
    "recnet.filter_rules",
    {
        "recency": "recnet.world.rule_kinds:RECENCY",
        "min_relevance": "recnet.world.rule_kinds:MIN_RELEVANCE",
        "conflict": "recnet.world.rule_kinds:CONFLICT",
        "max_share": "recnet.world.rule_kinds:MAX_SHARE",
    },
)

#: ``backward.critic`` → a ``recnet.critic.base.CriticFactory``: judges the modules of predictions
#: and proposes edits in the backward phase.
CRITICS: Registry[Any] = Registry(
    "backward.critic",
    "recnet.critics",
    {
        "offline": "recnet.critic.offline:OfflineCritic",
        "llm": "recnet.critic.llm:LLMCritic",
    },
)

#: ``evaluation.baselines`` → ``factory(seed: int) -> Scorer`` (``recnet.baselines.base``).
BASELINES: Registry[Any] = Registry(
    "evaluation.baselines",
    "recnet.baselines",
    {
        "popularity": "recnet.baselines.factories:popularity",
        "random": "recnet.baselines.factories:random",
        "itemknn": "recnet.baselines.factories:itemknn",
        "bprmf": "recnet.baselines.factories:bprmf",
    },
)
