"""Prompt pack loading, validation errors, hashing and rendering."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from recnet.errors import BackendError
from recnet.llm.pack import load_pack, pack_search_paths
from recnet.llm.schemas import OUTPUT_MODELS

OPERATIONS = {
    "extract",
    "summarize",
    "reflect_user",
    "reflect_item",
    "merge",
    "predict",
    "rank",
    "gradient",
    "optimize",
    "choose_merge",
    "reflect_fused",
    "summarize_batch",
    "merge_batch",
    "extract_batch",
}


@pytest.fixture
def pack_copy(tmp_path: Path) -> Path:
    source = load_pack("default").root
    target = tmp_path / "mypack"
    shutil.copytree(source, target)
    return target


def test_default_pack_is_complete() -> None:
    pack = load_pack("default")
    assert pack.name == "default" and pack.version
    assert set(pack.operations) == OPERATIONS
    assert len(pack.hash) == 64
    for spec in pack.operations.values():
        assert spec.output_model in OUTPUT_MODELS.values()
        assert spec.template_file.is_file()
    assert pack.root in [base / "default" for base in pack_search_paths()]


def _values(pack_root: Path, operation: str) -> dict[str, str]:
    pack = load_pack(pack_root)
    return {name: f"<{name}>" for name in pack.spec(operation).variables}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_operation_renders_every_variable(operation: str) -> None:
    pack = load_pack("default")
    values = _values(pack.root, operation)
    messages = pack.render(operation, values)
    assert [m["role"] for m in messages] == ["system", "user"]
    text = "\n".join(m["content"] for m in messages)
    for placeholder in values.values():
        assert placeholder in text
    assert "$" not in text.replace("$$", "")


def test_render_formats_values_and_checks_names() -> None:
    pack = load_pack("default")
    values: dict[str, object] = {
        "kind": "item",
        "profile": "Heat (1995)",
        "categories": ["genre", "era"],
    }
    user = pack.render("extract", values)[1]["content"]
    assert '["genre", "era"]' in user and "Heat (1995)" in user
    with pytest.raises(BackendError, match="missing categories"):
        pack.render("extract", {"kind": "item", "profile": "x"})
    with pytest.raises(BackendError, match="undeclared colour"):
        pack.render("extract", {**values, "colour": "red"})
    with pytest.raises(BackendError, match="no operation 'dance'"):
        pack.render("dance", {})


def test_repair_message_uses_pack_template() -> None:
    message = load_pack("default").repair_message("chosen: must be one of i:1, i:2")
    assert message["role"] == "user"
    assert "chosen: must be one of i:1, i:2" in message["content"]


def test_hash_changes_with_any_template(pack_copy: Path) -> None:
    before = load_pack(pack_copy).hash
    assert before == load_pack(pack_copy).hash
    path = pack_copy / "rank.yaml"
    path.write_text(path.read_text() + "\n# tweak\n")
    assert load_pack(pack_copy).hash != before


def _edit_manifest(root: Path, edit: Callable[[dict], None]) -> None:
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    edit(manifest)
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest))


def test_missing_template_file(pack_copy: Path) -> None:
    (pack_copy / "merge.yaml").unlink()
    with pytest.raises(BackendError) as info:
        load_pack(pack_copy)
    assert "merge.yaml" in str(info.value) and "missing" in str(info.value)
    assert "create" in (info.value.remedy or "")


def test_unknown_variable_in_template(pack_copy: Path) -> None:
    path = pack_copy / "predict.yaml"
    path.write_text(path.read_text().replace("$candidates", "$candidate_list"))
    with pytest.raises(BackendError) as info:
        load_pack(pack_copy)
    assert "predict.yaml" in str(info.value) and "$candidate_list" in str(info.value)
    assert "variables" in (info.value.remedy or "")


def test_stray_dollar_in_template(pack_copy: Path) -> None:
    path = pack_copy / "rank.yaml"
    path.write_text(path.read_text().replace("Rank all", "Rank all $ 5"))
    with pytest.raises(BackendError) as info:
        load_pack(pack_copy)
    assert "rank.yaml" in str(info.value)
    assert "$$" in (info.value.remedy or "")


def test_operation_without_output_model(pack_copy: Path) -> None:
    _edit_manifest(pack_copy, lambda m: m["operations"]["gradient"].pop("output"))
    with pytest.raises(BackendError) as info:
        load_pack(pack_copy)
    assert "'gradient' has no output model" in str(info.value)
    assert "manifest.yaml" in str(info.value)
    assert "GradientOutput" in (info.value.remedy or "")


def test_unknown_output_model(pack_copy: Path) -> None:
    _edit_manifest(pack_copy, lambda m: m["operations"]["rank"].update(output="RankingOut"))
    with pytest.raises(BackendError, match="unknown output model 'RankingOut'"):
        load_pack(pack_copy)


def test_template_needs_user_part(pack_copy: Path) -> None:
    (pack_copy / "summarize.yaml").write_text("system: only a system part\n")
    with pytest.raises(BackendError, match=r"summarize\.yaml"):
        load_pack(pack_copy)


def test_unknown_pack_name_and_folder(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as info:
        load_pack("no-such-pack")
    assert "default" in (info.value.remedy or "")
    with pytest.raises(BackendError, match=r"has no manifest\.yaml"):
        load_pack(tmp_path)
