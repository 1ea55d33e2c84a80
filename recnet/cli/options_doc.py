"""Document every scenario option from the pydantic models: key path, type, default, description.

Pipeline position: beside the scenario models (``recnet.config.scenario``), read by
``recnet options`` and by the README (which embeds ``recnet options --format markdown``).
``option_sections`` is a pure function walking the models; ``markdown`` and ``rich_table`` render
its result. Nothing here is maintained by hand: a new field shows up as soon as it is declared.
"""

from __future__ import annotations

import json
import re
import types
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from recnet.config.scenario import Scenario
from recnet.registry import Registry

_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


@dataclass(frozen=True)
class OptionRow:
    """One scenario option as documented: ``key`` is the full dotted path (``propagation.tau``)."""

    key: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class OptionSection:
    """The options of one scenario block (``path`` is empty for the top level)."""

    path: str
    title: str
    rows: list[OptionRow] = field(default_factory=list)


def option_sections(model: type[BaseModel] = Scenario, prefix: str = "") -> list[OptionSection]:
    """Walk ``model`` depth first in declaration order: one section per (nested) settings model.

    A section lists its own scalar options first; its sub-sections follow it.
    """
    own: list[OptionRow] = []
    nested: list[OptionSection] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _section_model(info.annotation)
        if sub is not None:
            nested.extend(option_sections(sub, prefix=f"{key}."))
            continue
        own.append(
            OptionRow(
                key=key,
                type=format_type(info.rebuild_annotation()) + _bounds(info),
                default=format_default(info),
                description=" ".join((info.description or "").split()),
            )
        )
    section = OptionSection(prefix.rstrip("."), _doc_title(model), own)
    return [section, *nested]


def option_rows(model: type[BaseModel] = Scenario) -> list[OptionRow]:
    """Every option of ``model`` (nested sections flattened), in documentation order."""
    return [row for section in option_sections(model) for row in section.rows]


def _section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _doc_title(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").replace("``", "`")
    return " ".join(doc.strip().split("\n\n")[0].split())


def format_type(annotation: Any) -> str:
    """A short, YAML-minded rendering: ``int``, ``float | null``, ``"a" | "b"``, ``list of int``."""
    if annotation is None or annotation is type(None):
        return "null"
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:  # other constraints (min length, checks) are in the description
        registries = [m for m in args[1:] if isinstance(m, Registry)]
        if registries:  # a registered name: the built-ins (the description names the registry)
            return " | ".join(json.dumps(name) for name in registries[0].builtin_names())
        return format_type(args[0])
    if origin is Literal:
        return " | ".join(json.dumps(a) if isinstance(a, str) else str(a) for a in args)
    if origin is Union or origin is types.UnionType:
        return " | ".join(format_type(a) for a in args)
    if origin in (list, set, frozenset):
        inner = format_type(args[0]) if args else "any"
        return f"list of ({inner})" if " | " in inner else f"list of {inner}"
    if origin is dict:
        if not args:
            return "mapping"
        return f"mapping {format_type(args[0])} → {format_type(args[1])}"
    if origin is tuple:
        return "[" + ", ".join(format_type(a) for a in args) + "]"
    if annotation is object or annotation is Any:
        return "any"
    if isinstance(annotation, type):
        if issubclass(annotation, Path):
            return "path"
        if issubclass(annotation, Enum):
            return " | ".join(json.dumps(m.value) for m in annotation)
        return {"str": "string", "bool": "bool", "int": "int", "float": "float"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _bounds(info: FieldInfo) -> str:
    parts = []
    for constraint in info.metadata:
        for kind, attr, symbol in _BOUNDS:
            if isinstance(constraint, kind):
                parts.append(f"{symbol} {getattr(constraint, attr)}")
    return f" ({', '.join(parts)})" if parts else ""


def format_default(info: FieldInfo) -> str:
    """The default as it would be written in YAML (``null``, ``true``, ``[1, 5, 10]``)."""
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    return format_value(value)


def format_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json"))
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return str(value.value)
    return json.dumps(value, default=str)


# -- renderers ------------------------------------------------------------------------------------


def _cell(text: str, code: bool = False) -> str:
    """Escape a table cell: pipes always; outside code spans, a ``<`` that would open a tag."""
    text = text.replace("|", "\\|")
    return text if code else _TAG_START.sub("&lt;", text)


def markdown(sections: list[OptionSection], heading: str = "###") -> str:
    """GitHub-flavoured markdown: one heading and one table per section (for the README)."""
    blocks = []
    for section in sections:
        if not section.rows:
            continue
        name = f"`{section.path}`" if section.path else "Top level"
        lines = [f"{heading} {name}", ""]
        if section.title:
            lines += [_cell(section.title), ""]
        lines += ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
        for row in section.rows:
            lines.append(
                f"| `{_cell(row.key, code=True)}` | {_cell(row.type)} "
                f"| `{_cell(row.default, code=True)}` "
                f"| {_cell(row.description)} |"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def rich_table(sections: list[OptionSection]) -> Table:
    """One terminal table, a ruled block per section with the section's title in its first row."""
    table = Table(title="Scenario options", caption="set any of them with --set key.path=value")
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("type", max_width=30)
    table.add_column("default", max_width=24)
    table.add_column("description", ratio=1, min_width=30)
    first = True
    for section in sections:
        if not section.rows:
            continue
        if not first:
            table.add_section()
        first = False
        table.add_row(
            Text(section.path or "(top level)", style="cyan"),
            "",
            "",
            Text(section.title, style="cyan italic"),
        )
        for row in section.rows:
            table.add_row(Text(row.key), Text(row.type), Text(row.default), Text(row.description))
    return table


def rich_list(sections: list[OptionSection]) -> RenderableType:
    """The same content for narrow terminals: a heading per section, two lines per option."""
    parts: list[RenderableType] = []
    for section in sections:
        if not section.rows:
            continue
        name = section.path or "top level"
        parts.append(Text.assemble("\n", (name, "bold cyan"), " — ", (section.title, "cyan")))
        for row in section.rows:
            head = Text.assemble(
                (row.key, "bold"),
                "  ",
                (row.type, "magenta"),
                "  default: ",
                (row.default, "green"),
            )
            parts.append(head)
            parts.append(Padding(Text(row.description), (0, 0, 0, 4)))
    parts.append(Text("\nset any of them with --set key.path=value", style="dim"))
    return Group(*parts)
