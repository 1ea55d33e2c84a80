"""Shipped scenarios validate; overrides are YAML; every option is documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from recnet.cli import options_doc
from recnet.cli.app import app
from recnet.config.loader import apply_overrides, load_scenario
from recnet.config.scenario import Scenario

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user data folder and an empty cache: what is found must come from the scenario."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECNET_DATA_DIR", raising=False)
    monkeypatch.setenv("RECNET_CACHE_DIR", str(tmp_path / "cache"))


def test_both_shipped_scenarios_exist() -> None:
    assert {p.name for p in SCENARIOS} >= {"synthetic.yaml", "movielens.yaml"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_shipped_scenario_validates(path: Path) -> None:
    scenario = load_scenario(path)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {scenario.name} (seed {scenario.seed}, dataset ")
    assert result.stderr == ""


def test_movielens_scenario_points_at_the_shared_zip(ml_small_zip: Path) -> None:
    scenario = load_scenario(REPO / "scenarios" / "movielens.yaml")
    assert scenario.dataset.path is not None
    assert scenario.dataset.path.resolve() == ml_small_zip.resolve()
    result = CliRunner().invoke(app, ["validate", str(REPO / "scenarios" / "movielens.yaml")])
    assert f"at {ml_small_zip.resolve()})" in result.stdout


def test_relative_dataset_path_resolves_against_the_scenario_folder(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "ml.zip").write_bytes(b"")
    (folder / "s.yaml").write_text("dataset:\n  path: data/ml.zip\n")
    scenario = load_scenario(folder / "s.yaml")
    assert scenario.dataset.path == (folder / "data" / "ml.zip").resolve()


def test_overrides_parse_yaml_values() -> None:
    scenario = load_scenario(
        REPO / "scenarios" / "synthetic.yaml",
        [
            "propagation.tau=0.8",
            "backward.enabled=true",
            "evaluation.ks=[1, 5]",
            "llm.base_url=null",
            "name=tuned",
            "dataset.synthetic.n_users=50",
            "llm.budget.prices={m: [0.5, 1.5]}",
        ],
    )
    assert scenario.propagation.tau == 0.8
    assert scenario.backward.enabled is True
    assert scenario.evaluation.ks == [1, 5]
    assert scenario.llm.base_url is None
    assert scenario.name == "tuned"
    assert scenario.dataset.synthetic.n_users == 50
    assert scenario.dataset.synthetic.n_items == 400  # untouched keys keep the file's values
    assert scenario.llm.budget.prices == {"m": (0.5, 1.5)}


def test_apply_overrides_creates_sections_and_leaves_input_alone() -> None:
    raw = {"world": {"n_routers": 8}}
    out = apply_overrides(raw, ["world.buffer.capacity=3", "seed=5", "world.n_routers=9"])
    assert out == {"world": {"n_routers": 9, "buffer": {"capacity": 3}}, "seed": 5}
    assert raw == {"world": {"n_routers": 8}}


def test_cli_overrides_reach_the_scenario() -> None:
    result = CliRunner().invoke(
        app,
        ["validate", str(REPO / "scenarios" / "synthetic.yaml"), "-s", "name=x", "--set", "seed=3"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: x (seed 3, dataset synthetic")


# -- documentation of every option ----------------------------------------------------------------


def walk(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object, str | None]]:
    """(key path, annotation, description) of every leaf option; sections are recursed into."""
    found = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert (annotation.__doc__ or "").strip(), f"section {prefix}{name} has no docstring"
            found += walk(annotation, f"{prefix}{name}.")
        else:
            found.append((f"{prefix}{name}", annotation, info.description))
    return found


def test_every_option_has_a_description() -> None:
    options = walk(Scenario)
    assert len(options) > 50
    missing = [key for key, _, description in options if not (description or "").strip()]
    assert not missing, f"options without a description: {missing}"


def test_options_doc_covers_every_option_once() -> None:
    rows = options_doc.option_rows()
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == {key for key, _, _ in walk(Scenario)}
    assert all(row.description and row.type and row.default for row in rows)


def test_options_doc_rows_match_the_models() -> None:
    rows = {row.key: row for row in options_doc.option_rows()}
    tau = rows["propagation.tau"]
    assert tau.type == "float (>= -1.0, <= 1.0)"
    assert tau.default == str(Scenario().propagation.tau)
    assert rows["llm.fuse"].default == '["choose_merge", "reflect"]'
    assert rows["world.buffer.flush_on"].default == "null"
    assert rows["trace.dir"].default == str(Scenario().trace.dir)
    assert rows["llm.base_url"].type == "string | list of string | null"
    assert rows["dataset.kind"].type == '"movielens" | "recbole" | "synthetic"'


def test_markdown_tables_are_well_formed() -> None:
    text = options_doc.markdown(options_doc.option_sections())
    n_rows = 0
    for line in text.splitlines():
        if line.startswith("| `"):
            n_rows += 1
            assert len(re.findall(r"(?<!\\)\|", line)) == 5, line  # 4 cells; inner pipes escaped
    assert n_rows == len(options_doc.option_rows())
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    assert headings[0] == "### Top level"
    assert "### `llm.retry`" in headings
    assert "<name>" not in text  # would vanish on GitHub as an HTML tag


class _Inner(BaseModel):
    """Inner block."""

    flag: bool = Field(False, description="A flag.")


class _Outer(BaseModel):
    """Outer block."""

    mode: Literal["a", "b"] = Field("a", description="Mode.")
    tags: list[Literal["x", "y"]] = Field(default_factory=list, description="Tags.")
    limit: int | None = Field(None, ge=2, description="Limit.")
    inner: _Inner = Field(default_factory=_Inner)


def test_option_sections_walk_nested_models_in_order() -> None:
    sections = options_doc.option_sections(_Outer)
    assert [(s.path, s.title) for s in sections] == [
        ("", "Outer block."),
        ("inner", "Inner block."),
    ]
    rows = [(r.key, r.type, r.default) for s in sections for r in s.rows]
    assert rows == [
        ("mode", '"a" | "b"', "a"),
        ("tags", 'list of ("x" | "y")', "[]"),
        ("limit", "int | null (>= 2)", "null"),
        ("inner.flag", "bool", "false"),
    ]
