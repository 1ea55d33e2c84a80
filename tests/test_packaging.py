"""pyproject.toml declares what the code imports, with lower bounds it works with, and no extra
that nothing uses (issue 11, item 9)."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: The newest openai release before its move to httpx2, and the first one after (3.0.0's
#: wheel requires httpx2, 2.54.0's requires httpx); recnet.llm imports httpx2.
LAST_OPENAI_ON_HTTPX = "2.54.0"


def requirements(items: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(item) for item in items]
    return {canonicalize_name(r.name): r for r in parsed}


def imported_modules(*folders: str) -> set[str]:
    """Top-level names of every module imported (at any depth) by the ``.py`` files there."""
    found: set[str] = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    """module → canonical names of the installed distributions that provide it."""
    providers = packages_distributions()
    return {m: {canonicalize_name(d) for d in providers.get(m, [])} for m in modules}


def test_every_imported_package_is_declared() -> None:
    """In the dependencies, or in an optional extra other than dev (``ray``: imported only when
    ``executor.kind: ray`` asks for it, with the install command when it is missing)."""
    declared = set(requirements(PROJECT["dependencies"]))
    for extra, items in PROJECT.get("optional-dependencies", {}).items():
        if extra != "dev":
            declared |= set(requirements(items))
    third_party = imported_modules("recnet") - set(sys.stdlib_module_names) - {"recnet"}
    undeclared = {
        module: sorted(dists)
        for module, dists in distributions_of(third_party).items()
        if not dists & declared
    }
    assert undeclared == {}


def test_openai_lower_bound_is_a_release_on_httpx2() -> None:
    openai = requirements(PROJECT["dependencies"])["openai"]
    assert not openai.specifier.contains(LAST_OPENAI_ON_HTTPX), openai
    assert openai.specifier.contains("3.0.0"), openai  # the first release on httpx2 works
    installed = [Requirement(r) for r in requires("openai") or []]
    assert "httpx2" in {canonicalize_name(r.name) for r in installed if r.marker is None}


def test_every_optional_extra_is_used() -> None:
    """An extra's packages are imported by the library or the experiments (dev tools aside)."""
    used = imported_modules("recnet", "experiments")
    providers = distributions_of(used)
    provided = set().union(*providers.values())
    unused = {
        extra: [name for name in requirements(items) if name not in provided]
        for extra, items in PROJECT.get("optional-dependencies", {}).items()
        if extra != "dev"
    }
    assert {extra: names for extra, names in unused.items() if names} == {}
