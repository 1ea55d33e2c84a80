"""Prompt packs: data folders of templates that the LLM brain renders into chat messages.

Pipeline position: loaded once per run (``load_pack(llm.pack)``), used by
``structured.call_structured`` to build each request. A pack is a folder (not Python)::

    agents/<name>/manifest.yaml   name, version, description, and per operation: the template
                                  file, the output model (a name in recnet.llm.schemas), the
                                  variables it uses; optionally a ``repair`` template
    agents/<name>/<op>.yaml       ``system:`` and ``user:`` texts

Templates use ``string.Template`` placeholders — ``$name`` or ``${name}``, ``$$`` for a literal
dollar sign — so JSON braces in prompts need no escaping. Everything is validated at load time:
a missing file, a placeholder the manifest does not declare, a bad ``$``, or an operation without
a known output model is a ``BackendError`` naming the file and the fix. ``pack.hash`` is the
sha256 over the manifest and every template, and is part of the cache key.

Lookup of a pack name: ``recnet/_agents/<name>`` (an installed wheel: pyproject force-includes
``agents/`` there), then ``<checkout>/agents/<name>`` (an editable install). Anything that looks
like a path (contains a separator or starts with ``.``/``~``) is used as a folder directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml
from pydantic import BaseModel

import recnet
from recnet.errors import BackendError
from recnet.llm.schemas import OUTPUT_MODELS

MANIFEST = "manifest.yaml"

DEFAULT_REPAIR = Template(
    "Your previous answer could not be used: $error\n"
    "Answer again with only one JSON object in the requested format."
)


@dataclass(frozen=True)
class OperationSpec:
    """One operation of a pack: its templates, output model and declared variables."""

    name: str
    template_file: Path
    output_model: type[BaseModel]
    variables: tuple[str, ...]
    user: Template
    system: Template | None = None
    description: str = ""


@dataclass(frozen=True)
class PromptPack:
    """A validated prompt pack."""

    name: str
    version: str
    description: str
    root: Path
    hash: str
    operations: Mapping[str, OperationSpec]
    repair: Template = field(default=DEFAULT_REPAIR)

    def spec(self, operation: str) -> OperationSpec:
        try:
            return self.operations[operation]
        except KeyError:
            known = ", ".join(sorted(self.operations))
            raise BackendError(
                f"prompt pack {self.name!r} has no operation {operation!r} (it has: {known})",
                f"add {operation!r} to {self.root / MANIFEST} with its template, or use another "
                "pack (llm.pack)",
            ) from None

    def output_model(self, operation: str) -> type[BaseModel]:
        return self.spec(operation).output_model

    def render(self, operation: str, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages for ``operation`` with ``variables`` substituted.

        Strings are inserted as they are, numbers and booleans with ``str``, anything else as
        compact JSON. Every declared variable must be given and nothing else.
        """
        spec = self.spec(operation)
        missing = [v for v in spec.variables if v not in variables]
        extra = [v for v in variables if v not in spec.variables]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if extra:
                problems.append(f"undeclared {', '.join(extra)}")
            raise BackendError(
                f"variables for {operation!r} of pack {self.name!r}: {'; '.join(problems)}",
                f"pass exactly the variables declared in {self.root / MANIFEST}: "
                f"{', '.join(spec.variables)}",
            )
        values = {k: format_value(v) for k, v in variables.items()}
        messages = []
        if spec.system is not None:
            messages.append({"role": "system", "content": spec.system.substitute(values)})
        messages.append({"role": "user", "content": spec.user.substitute(values)})
        return messages

    def repair_message(self, error: str) -> dict[str, str]:
        """The user message that asks for a corrected answer."""
        return {"role": "user", "content": self.repair.substitute(error=error)}


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def pack_search_paths() -> list[Path]:
    """Folders searched for pack names, in order."""
    package_dir = Path(recnet.__file__).resolve().parent
    return [package_dir / "_agents", package_dir.parent / "agents"]


def available_packs() -> list[str]:
    names: set[str] = set()
    for base in pack_search_paths():
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if (p / MANIFEST).is_file())
    return sorted(names)


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.startswith((".", "~"))


def resolve_pack_dir(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, Path) or _looks_like_path(str(name_or_path)):
        folder = Path(name_or_path).expanduser()
        if not (folder / MANIFEST).is_file():
            raise BackendError(
                f"prompt pack folder {folder} has no {MANIFEST}",
                "point llm.pack at a folder holding a manifest.yaml, or at a pack name "
                f"({', '.join(available_packs()) or 'none found'})",
            )
        return folder
    for base in pack_search_paths():
        folder = base / str(name_or_path)
        if (folder / MANIFEST).is_file():
            return folder
    raise BackendError(
        f"prompt pack {name_or_path!r} not found (searched "
        f"{', '.join(str(p) for p in pack_search_paths())})",
        f"use one of: {', '.join(available_packs()) or 'none installed'}, or a folder path",
    )


def _read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(f"{what} {path} does not exist", f"create {path}") from None
    except yaml.YAMLError as exc:
        raise BackendError(f"{what} {path} is not valid YAML: {exc}", f"fix {path}") from None


def _template(text: Any, path: Path, part: str, declared: tuple[str, ...]) -> Template:
    if not isinstance(text, str):
        raise BackendError(
            f"{path}: '{part}' must be a text, got {type(text).__name__}",
            f"write '{part}: |' followed by the indented prompt text",
        )
    template = Template(text)
    if not template.is_valid():
        raise BackendError(
            f"{path}: '{part}' has a '$' that is not a placeholder",
            "write $$ for a literal dollar sign and $name or ${name} for a variable",
        )
    unknown = sorted(set(template.get_identifiers()) - set(declared))
    if unknown:
        raise BackendError(
            f"{path}: '{part}' uses unknown variable(s) {', '.join('$' + u for u in unknown)}",
            f"declare them under this operation's 'variables' in {MANIFEST} "
            f"(declared: {', '.join(declared) or 'none'}) or remove them from the template",
        )
    return template


def _load_template_file(
    root: Path, op: str, entry: Mapping[str, Any], declared: tuple[str, ...]
) -> tuple[Path, Template, Template | None]:
    manifest = root / MANIFEST
    file_name = entry.get("template")
    if not isinstance(file_name, str) or not file_name:
        raise BackendError(
            f"{manifest}: operation {op!r} has no 'template'",
            f"add 'template: {op}.yaml' under operations.{op}",
        )
    path = root / file_name
    if not path.is_file():
        raise BackendError(
            f"{manifest}: template {file_name!r} of operation {op!r} is missing ({path})",
            f"create {path} with 'system:' and 'user:' texts, or fix the file name",
        )
    data = _read_yaml(path, "template")
    if not isinstance(data, dict) or "user" not in data:
        raise BackendError(
            f"{path}: a template needs a 'user:' text (and optionally 'system:')",
            "write 'system: |' and 'user: |' followed by the indented prompt texts",
        )
    unknown_keys = sorted(set(data) - {"system", "user"})
    if unknown_keys:
        raise BackendError(
            f"{path}: unknown key(s) {', '.join(unknown_keys)}",
            "a template has only 'system' and 'user'",
        )
    user = _template(data["user"], path, "user", declared)
    system = _template(data["system"], path, "system", declared) if "system" in data else None
    return path, user, system


def _pack_hash(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in [root / MANIFEST, *sorted(set(files))]:
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def load_pack(name_or_path: str | Path) -> PromptPack:
    """Find, read and validate a prompt pack (see the module docstring)."""
    root = resolve_pack_dir(name_or_path)
    manifest_path = root / MANIFEST
    manifest = _read_yaml(manifest_path, "manifest")
    if not isinstance(manifest, dict):
        raise BackendError(f"{manifest_path} must be a mapping", "see agents/default/manifest.yaml")
    for key in ("name", "version", "operations"):
        if key not in manifest:
            raise BackendError(
                f"{manifest_path} has no '{key}'",
                f"add '{key}:' (see agents/default/manifest.yaml)",
            )
    operations_data = manifest["operations"]
    if not isinstance(operations_data, dict) or not operations_data:
        raise BackendError(
            f"{manifest_path}: 'operations' must map operation names to their entries",
            "see agents/default/manifest.yaml",
        )
    files: list[Path] = []
    operations: dict[str, OperationSpec] = {}
    for op, entry in operations_data.items():
        if not isinstance(entry, dict):
            raise BackendError(
                f"{manifest_path}: operations.{op} must be a mapping",
                "give it 'template', 'output' and 'variables'",
            )
        variables = entry.get("variables") or []
        if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
            raise BackendError(
                f"{manifest_path}: operations.{op}.variables must be a list of names",
                "write e.g. 'variables: [profile, kind]'",
            )
        declared = tuple(variables)
        output_name = entry.get("output")
        if not output_name:
            raise BackendError(
                f"{manifest_path}: operation {op!r} has no output model",
                f"add 'output: <Model>' under operations.{op}; known models: "
                f"{', '.join(OUTPUT_MODELS)}",
            )
        if output_name not in OUTPUT_MODELS:
            raise BackendError(
                f"{manifest_path}: operation {op!r} names unknown output model {output_name!r}",
                f"use one of {', '.join(OUTPUT_MODELS)}",
            )
        path, user, system = _load_template_file(root, str(op), entry, declared)
        files.append(path)
        operations[str(op)] = OperationSpec(
            name=str(op),
            template_file=path,
            output_model=OUTPUT_MODELS[output_name],
            variables=declared,
            user=user,
            system=system,
            description=str(entry.get("description", "")),
        )
    repair = DEFAULT_REPAIR
    repair_entry = manifest.get("repair")
    if repair_entry is not None:
        if not isinstance(repair_entry, dict):
            raise BackendError(
                f"{manifest_path}: 'repair' must be a mapping", "write 'repair: {template: ...}'"
            )
        path, repair, _ = _load_template_file(root, "repair", repair_entry, ("error",))
        files.append(path)
    return PromptPack(
        name=str(manifest["name"]),
        version=str(manifest["version"]),
        description=str(manifest.get("description", "")),
        root=root,
        hash=_pack_hash(root, files),
        operations=operations,
        repair=repair,
    )
