"""Bad input gives a DatasetError that names what is wrong and how to fix it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from recnet.config.scenario import DatasetSettings
from recnet.data.filters import apply_filters
from recnet.data.load import load_dataset
from recnet.data.movielens import load_movielens
from recnet.data.types import Dataset, Interaction, Item
from recnet.errors import DatasetError

RATINGS = "userId,movieId,rating,timestamp\n"


def tiny_latest(folder: Path, ratings: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(RATINGS + ratings)
    (folder / "movies.csv").write_text("movieId,title,genres\n1,A (2000),Drama\n")
    return folder


@pytest.fixture
def no_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("RECNET_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECNET_CACHE_DIR", str(cache))
    return cache


def test_missing_explicit_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.zip"
    with pytest.raises(DatasetError, match="does not exist") as err:
        load_dataset(DatasetSettings(path=missing), seed=0)
    assert str(missing) in err.value.message


def test_not_found_with_download_disabled(tmp_path: Path, no_env: Path) -> None:
    data = tmp_path / "data"
    settings = DatasetSettings(variant="ml-100k", data_dir=data, download=False)
    with pytest.raises(DatasetError) as err:
        load_dataset(settings, seed=0)
    message, remedy = err.value.message, err.value.remedy or ""
    assert message.startswith("ml-100k not found (looked in:")
    for place in (data / "ml-100k.zip", data / "ml-100k", no_env / "ml-100k.zip"):
        assert str(place) in message
    assert "download" in message and "disabled" in message
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in remedy
    assert "dataset.path" in remedy and "RECNET_DATA_DIR" in remedy
    assert not no_env.exists()  # nothing created when downloading is off


def test_corrupt_zip(tmp_path: Path) -> None:
    bad = tmp_path / "ml-latest-small.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    with pytest.raises(DatasetError, match="not a readable zip") as err:
        load_movielens(bad)
    assert str(bad) in err.value.message and err.value.remedy


def test_damaged_member_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml/ratings.csv", RATINGS + "1,1,4.0,10\n" * 200)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"ml/ratings.csv") + len("ml/ratings.csv")
    for k in range(start + 5, start + 25):  # scramble the compressed bytes
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"ratings\.csv") as err:
        load_movielens(path)
    assert str(path) in err.value.message


def test_zip_without_ratings(tmp_path: Path) -> None:
    path = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-latest-small/movies.csv", "movieId,title,genres\n1,A (2000),Drama\n")
    with pytest.raises(DatasetError, match="no MovieLens ratings file") as err:
        load_movielens(path)
    assert str(path) in err.value.message
    assert "ratings.csv" in err.value.message and "ml-latest-small/movies.csv" in err.value.message


def test_malformed_rating_row(tmp_path: Path) -> None:
    folder = tiny_latest(tmp_path / "ml", "1,1,4.0,10\n1,1,four,11\n")
    with pytest.raises(DatasetError, match="line 3"):
        load_movielens(folder)


def test_empty_after_min_rating(tmp_path: Path) -> None:
    folder = tiny_latest(tmp_path / "ml", "1,1,2.0,10\n1,2,3.0,11\n1,3,1.0,12\n")
    with pytest.raises(DatasetError, match=r"min_rating=4\.5") as err:
        load_dataset(DatasetSettings(path=folder, min_rating=4.5), seed=0)
    assert "no interactions left" in err.value.message


def test_empty_after_dropping_short_users(tmp_path: Path) -> None:
    folder = tiny_latest(tmp_path / "ml", "1,1,2.0,10\n2,1,3.0,11\n")
    with pytest.raises(DatasetError, match="short_users=drop"):
        load_dataset(DatasetSettings(path=folder, short_users="drop"), seed=0)


def test_empty_interaction_file(tmp_path: Path) -> None:
    folder = tiny_latest(tmp_path / "ml", "")
    with pytest.raises(DatasetError, match="no interactions"):
        load_dataset(DatasetSettings(path=folder), seed=0)


def _ratings_with_short_users(n_short: int) -> str:
    rows = [f"100,{k},4.0,{k}" for k in range(1, 6)]
    rows += [f"{200 + u},1,3.0,{50 + u}" for u in range(n_short)]
    return "\n".join(rows) + "\n"


def test_short_users_error_names_them_and_the_remedy(tmp_path: Path) -> None:
    folder = tiny_latest(tmp_path / "ml", _ratings_with_short_users(7))
    with pytest.raises(DatasetError) as err:
        load_dataset(DatasetSettings(path=folder), seed=0)
    message = err.value.message
    assert "7 user(s)" in message
    assert "200, 201, 202, 203, 204" in message and "205" not in message  # at most five named
    assert "--set dataset.short_users=drop" in (err.value.remedy or "")


def test_short_users_drop(tmp_path: Path) -> None:
    folder = tiny_latest(tmp_path / "ml", _ratings_with_short_users(1))
    ds = load_dataset(DatasetSettings(path=folder, short_users="drop"), seed=0)
    assert ds.users == ["100"]
    assert len(ds.interactions) == 5
    assert set(ds.items) == {"1", "2", "3", "4", "5"}  # catalogue kept, bare items added


def test_recent_window_then_short_users_on_a_handmade_dataset() -> None:
    inters = [Interaction("a", str(k), k) for k in range(6)] + [
        Interaction("b", str(k), 10 + k) for k in range(2)
    ]
    ds = Dataset("t", inters, {})
    with pytest.raises(DatasetError, match=r"\(e\.g\. b\)"):
        apply_filters(ds, DatasetSettings(max_interactions_per_user=3), seed=0)
    kept = apply_filters(ds, DatasetSettings(max_interactions_per_user=3, short_users="drop"), 0)
    assert [(i.user, i.item) for i in kept.interactions] == [("a", "3"), ("a", "4"), ("a", "5")]
    assert set(kept.items) == {str(k) for k in range(6)}
    assert all(isinstance(item, Item) for item in kept.items.values())


def test_recbole_needs_a_path() -> None:
    with pytest.raises(ValidationError, match=r"kind=recbole needs dataset\.path"):
        DatasetSettings(kind="recbole")  # refused before anything runs (issue 11, item 4)
    unchecked = DatasetSettings.model_construct(**{**DatasetSettings().__dict__, "kind": "recbole"})
    with pytest.raises(DatasetError, match=r"dataset\.path"):
        load_dataset(unchecked, seed=0)


def test_recbole_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DatasetSettings(kind="recbole", path=tmp_path / "absent"), seed=0)
