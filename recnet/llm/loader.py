"""Loading custom backends: ``module:Class`` paths and the ``recnet.backends`` entry-point group.

Pipeline position: used by ``factory.build_backend`` when ``llm.backend`` is neither a built-in
name nor ``replay``. The class is constructed as ``Class(settings, **llm.options)`` and must
provide ``async complete(request) -> LLMResponse`` and ``async aclose()``. A package registers one
with ``[project.entry-points."recnet.backends"] mybackend = "mypkg.backend:MyBackend"``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

from recnet import registry
from recnet.config.scenario import LLMSettings
from recnet.errors import BackendError
from recnet.llm.protocol import LLMBackend

ENTRY_POINT_GROUP = "recnet.backends"


def import_object(spec: str, *, what: str = "backend") -> Any:
    """Import ``package.module:Name``; errors are ``BackendError``s."""
    return registry.import_object(spec, what=what, error=BackendError)


def entry_point_names() -> list[str]:
    """Names registered in the ``recnet.backends`` entry-point group."""
    return registry.entry_point_names(ENTRY_POINT_GROUP)


def load_backend_class(spec: str) -> type:
    """Resolve ``module:Class`` or an entry-point name to a class."""
    if ":" in spec:
        return import_object(spec, what="backend")
    group = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    matches = [ep for ep in group if ep.name == spec]
    if not matches:
        known = ", ".join(["offline", "openai", "replay", "scripted", *entry_point_names()])
        raise BackendError(
            f"unknown llm.backend {spec!r}",
            f"use one of {known}, or 'package.module:Class' for a custom backend",
        )
    try:
        return matches[0].load()
    except Exception as exc:
        raise BackendError(
            f"entry point {spec!r} in group {ENTRY_POINT_GROUP} failed to load: {exc}",
            "reinstall the package that registers it",
        ) from exc


def build_custom_backend(spec: str, settings: LLMSettings, **options: Any) -> LLMBackend:
    """Construct a custom backend class as ``Class(settings, **options)`` and check its shape."""
    cls = load_backend_class(spec)
    if not callable(cls):
        raise BackendError(f"backend {spec!r} is not a class", "point llm.backend at a class")
    try:
        backend = cls(settings, **options)
    except TypeError as exc:
        raise BackendError(
            f"could not construct backend {spec!r} as Class(settings, **llm.options): {exc}",
            "give the class an __init__(self, settings, **options) or fix llm.options",
        ) from exc
    complete = getattr(backend, "complete", None)
    aclose = getattr(backend, "aclose", None)
    if not inspect.iscoroutinefunction(complete) or not inspect.iscoroutinefunction(aclose):
        raise BackendError(
            f"backend {spec!r} must define 'async def complete(self, request)' and "
            "'async def aclose(self)'",
            "implement the recnet.llm.protocol.LLMBackend protocol",
        )
    return backend
