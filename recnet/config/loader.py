"""Read a scenario YAML, apply ``--set key.path=value`` overrides and validate it.

Pipeline position: the entry of every run (``recnet simulate``/``validate``). Errors are
``ScenarioError`` whose message names the key path, what was given and what is expected.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from recnet.config.scenario import Scenario
from recnet.errors import ScenarioError


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Load and validate ``path``; relative dataset paths resolve against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(
            f"scenario file not found: {path}",
            "pass the path of a YAML file, e.g. scenarios/synthetic.yaml",
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML ({exc})", "fix the YAML syntax") from exc
    if raw is None:  # an empty file (or only comments) is a mistake, not "all defaults"
        raise ScenarioError(
            f"{path}: the scenario file is empty",
            "write at least a dataset section, e.g. start from scenarios/synthetic.yaml "
            "(every key: `recnet options`)",
        )
    if not isinstance(raw, dict):
        raise ScenarioError(
            f"{path}: the top level must be a mapping of keys", "see README, Scenarios"
        )
    raw = apply_overrides(raw, overrides or [])
    scenario = validate_scenario(raw, source=str(path))
    dataset = scenario.dataset
    if dataset.path is not None and not dataset.path.is_absolute():
        dataset.path = (path.parent / dataset.path).resolve()
    return scenario


def validate_scenario(raw: dict[str, Any], source: str = "scenario") -> Scenario:
    """Validate a mapping into a ``Scenario``, turning pydantic errors into one readable error."""
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, source)) from exc


#: pydantic's names for the branches of a union in an error's location (besides tags that are not
#: identifiers, such as ``constrained-int`` or ``literal['auto']``)
UNION_BRANCHES = frozenset({"int", "float", "str", "bool", "none"})


def _is_branch(part: object) -> bool:
    """Whether a location part names a union's branch rather than a key or a list index."""
    return isinstance(part, str) and (not part.isidentifier() or part in UNION_BRANCHES)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``key.path: what is wrong (got X)``. A value that fits none of a
    union's forms is one problem: ``key: <first form's complaint>, or <second's> (got X)``."""
    problems: list[tuple[str, list[str], str]] = []  # (key, complaints, " (got X)" or "")
    unions: dict[str, list[str]] = {}  # key → the complaints of its union's forms so far
    for err in exc.errors():
        loc = [part for part in err["loc"] if not _is_branch(part)]
        key = ".".join(str(part) for part in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in loc[:-1])
            where = f"'{parent}'" if parent else "the top level"
            remedy = f"see `recnet options` for the keys allowed in {where}"
            close = difflib.get_close_matches(str(loc[-1]), section_keys(loc[:-1]), n=1)
            fix = f"did you mean '{close[0]}'?" if close else "remove it or fix the spelling"
            complaint = f"unknown key — {fix} ({remedy})"
            problems.append((key, [complaint], ""))
            continue
        got = err.get("input")
        secret = key.endswith("api_key_env")  # a key pasted here instead of a variable name
        got_text = "" if isinstance(got, dict) or secret else f" (got {got!r})"
        complaints = [err["msg"].removeprefix("Value error, ")]
        if len(loc) < len(err["loc"]):  # one form of a union
            if key in unions:
                unions[key] += complaints
                continue
            unions[key] = complaints
        problems.append((key, complaints, got_text))
    lines = [f"{key}: {', or '.join(complaints)}{got}" for key, complaints, got in problems]
    plural = "s" if len(lines) > 1 else ""
    return f"{source}: {len(lines)} invalid setting{plural}: " + "; ".join(lines)


def section_keys(path: list[Any]) -> list[str]:
    """The keys the scenario section at ``path`` allows (``[]``: the top level;
    ``["dataset", "synthetic"]``: the synthetic world's); none when no section model is there."""
    model: type[BaseModel] | None = Scenario
    for part in path:
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _section_model(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model class in a field's annotation (``Section``, ``Section | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [m for m in map(_section_model, typing.get_args(annotation)) if m is not None]
    return models[0] if len(models) == 1 else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; values are parsed as YAML (``0.8``, ``true``, ``[1, 5]``)."""
    result = _deep_copy(raw)
    for override in overrides:
        if "=" not in override:
            raise ScenarioError(
                f"override {override!r} has no '='", "write it as --set key.path=value"
            )
        key, _, value_text = override.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ScenarioError(
                f"override {override!r} has an empty key", "write --set key.path=value"
            )
        try:
            value = yaml.safe_load(value_text)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"override {key}: value {value_text!r} is not valid YAML") from exc
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                path = ".".join(parts[: depth + 1])
                raise ScenarioError(f"override {key}: '{path}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}
