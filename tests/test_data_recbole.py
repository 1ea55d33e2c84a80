"""RecBole atomic files: AgentCF's sequential split format and the general format."""

from __future__ import annotations

from pathlib import Path

import pytest

from recnet.config.scenario import DatasetSettings
from recnet.data.load import load_dataset
from recnet.data.recbole import load_recbole
from recnet.errors import DatasetError

SEQ_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def agentcf_folder(root: Path) -> Path:
    """A tiny copy of the layout of AgentCF's CDs-100-user-dense folder."""
    return write(
        root / "CDs-tiny",
        {
            "CDs-tiny.train.inter": SEQ_HEADER + "u1\ta\tb\nu1\ta b\tc\nu2\tc\td\nu2\tc d\ta\n",
            "CDs-tiny.valid.inter": SEQ_HEADER + "u1\ta b c\td\nu2\tc d a\te\n",
            "CDs-tiny.test.inter": SEQ_HEADER + "u1\ta b c d\te\nu2\tc d a e\tb\n",
            "CDs.item": "item_id:token\ttitle:token_seq\tcategory:token_seq\n"
            "a\tTom Petty &amp; The Heartbreakers: Greatest Hits\tClassic Rock; Album-Oriented "
            "Rock (AOR)\n"
            'b\t<span id="parentalAdvisory" class="a-size-medium">\tRap & Hip-Hop; East Coast\n'
            "c\tBlue\n"
            "z\tUnheard\tJazz\n",
            "CDs-tiny.random": "u1\tz e a x e\nu2\ty b\n",
        },
    )


def test_agentcf_sequential_split_format(tmp_path: Path) -> None:
    ds = load_recbole(agentcf_folder(tmp_path))
    assert ds.name == "CDs-tiny"
    per_user: dict[str, list[str]] = {}
    for inter in ds.interactions:
        per_user.setdefault(inter.user, []).append(inter.item)
    assert per_user == {"u1": list("abcde"), "u2": list("cdaeb")}
    # no timestamps: the position in the sequence orders them, users interleave round-robin
    assert [(i.user, i.timestamp) for i in ds.interactions[:4]] == [
        ("u1", 0),
        ("u2", 0),
        ("u1", 1),
        ("u2", 1),
    ]
    assert all(i.rating is None for i in ds.interactions)
    a, b, c = ds.items["a"], ds.items["b"], ds.items["c"]
    assert a.title == "Tom Petty & The Heartbreakers: Greatest Hits"
    assert a.genres == ("Classic Rock", "Album-Oriented Rock (AOR)")
    assert b.title == "b" and b.genres == ("Rap & Hip-Hop", "East Coast")
    assert c.title == "Blue" and c.genres == ()
    assert ds.items["d"].title == "d"  # interacted but no metadata: bare item
    assert ds.items["z"].genres == ("Jazz",)  # catalogue items without interactions are kept


def test_agentcf_candidates_put_the_test_item_first(tmp_path: Path) -> None:
    ds = load_recbole(agentcf_folder(tmp_path))
    assert ds.candidates == {"u1": ["e", "z", "a", "x"], "u2": ["b", "y"]}
    assert ds.items["x"].title == "x" and ds.items["y"].title == "y"


def test_truncated_histories_are_stitched(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "trunc",
        {"trunc.train.inter": SEQ_HEADER + "u\ta\tb\nu\ta b\tc\nu\tb c\td\nu\tc d\te\n"},
    )
    ds = load_recbole(folder)
    assert [i.item for i in ds.interactions] == list("abcde")
    assert ds.candidates is None


def test_inconsistent_history_is_an_error(tmp_path: Path) -> None:
    folder = write(tmp_path / "bad", {"bad.train.inter": SEQ_HEADER + "u\ta\tb\nu\tx y\tc\n"})
    with pytest.raises(DatasetError, match="line 3") as err:
        load_recbole(folder)
    assert "user u" in err.value.message


def general_folder(root: Path, *, timestamps: bool = True) -> Path:
    header = "user_id:token\titem_id:token\trating:float" + (
        "\ttimestamp:float" if timestamps else ""
    )
    rows = [
        ("1", "40", "5", "881250700.0"),
        ("1", "10", "4", "881250949.0"),
        ("2", "10", "5", "881250900.0"),
        ("1", "20", "3", "881250800.0"),
        ("1", "30", "1", "881251000.0"),
    ]
    body = "".join("\t".join(r if timestamps else r[:3]) + "\n" for r in rows)
    return write(
        root / "ml-tiny",
        {
            "ml-tiny.inter": header + "\n" + body,
            "ml-tiny.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
            "class:token_seq\tbrand:token\n"
            "10\tToy Story\t1995\tAnimation Children's Comedy\tPixar\n"
            "20\tHeat\t1995\tAction Crime\t\n",
            "ml-tiny.user": "user_id:token\tage:token\n1\t24\n2\t53\n",
        },
    )


def test_general_format_with_timestamps(tmp_path: Path) -> None:
    ds = load_recbole(general_folder(tmp_path))
    assert [(i.user, i.item, i.timestamp, i.rating) for i in ds.interactions] == [
        ("1", "40", 881250700, 5.0),
        ("1", "20", 881250800, 3.0),
        ("2", "10", 881250900, 5.0),
        ("1", "10", 881250949, 4.0),
        ("1", "30", 881251000, 1.0),
    ]
    toy = ds.items["10"]
    assert (toy.title, toy.year) == ("Toy Story", 1995)
    assert toy.genres == ("Animation", "Children's", "Comedy")
    assert toy.tags == ("pixar",)
    assert ds.items["20"].tags == ()
    assert ds.items["30"].title == "30"


def test_general_format_without_timestamps_uses_row_order(tmp_path: Path) -> None:
    ds = load_recbole(general_folder(tmp_path, timestamps=False))
    assert [(i.user, i.item, i.timestamp) for i in ds.interactions] == [
        ("1", "40", 0),
        ("2", "10", 0),
        ("1", "10", 1),
        ("1", "20", 2),
        ("1", "30", 3),
    ]


def test_amazon_style_item_fields(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "Office",
        {
            "Office.inter": "user_id:token\titem_id:token\nu\tp\nu\tq\nu\tr\n",
            "Office.item": "item_id:token\ttitle:token_seq\tcategories:token_seq\tsales_type:token"
            "\tbrand:token\n"
            "p\tStapler\t['Office Products', 'Staplers']\tOffice Products\tSwingline\n",
        },
    )
    ds = load_recbole(folder)
    p = ds.items["p"]
    assert p.genres == ("Office Products", "Staplers")
    assert p.tags == ("office products", "swingline")


def test_load_dataset_recbole_with_filters(tmp_path: Path) -> None:
    folder = agentcf_folder(tmp_path)
    ds = load_dataset(DatasetSettings(kind="recbole", path=folder, max_users=1), seed=0)
    assert len(ds.users) == 1
    assert ds.candidates is not None and list(ds.candidates) == ds.users
    assert "z" in ds.items and "y" in ds.items  # the catalogue stays whole


def test_filters_that_remove_a_candidate_test_item_are_refused(tmp_path: Path) -> None:
    folder = general_folder(tmp_path)
    (folder / "ml-tiny.random").write_text("1\t20 10 99\n")
    ds = load_recbole(folder)
    assert ds.candidates == {"1": ["30", "20", "10", "99"]}
    settings = DatasetSettings(kind="recbole", path=folder, min_rating=3.0, short_users="drop")
    with pytest.raises(DatasetError, match="test item") as err:
        load_dataset(settings, seed=0)
    assert "min_rating" in (err.value.remedy or "")


@pytest.mark.parametrize(
    ("files", "pattern"),
    [
        ({"x.inter": "user_id\titem_id:token\nu\ti\n"}, "has no type"),
        ({"x.inter": "user:token\titem_id:token\nu\ti\n"}, "no user_id field"),
        ({"x.inter": "user_id:token\titem_id:token\trating:float\nu\ti\tgood\n"}, "not a number"),
        ({"y.inter": "user_id:token\titem_id:token\nu\ti\n"}, "found: y.inter"),
        ({"x.inter": ""}, "is empty"),
        (
            {
                "x.train.inter": SEQ_HEADER + "u\ta\tb\n",
                "x.test.inter": "user_id:token\titem_id:token\nu\tc\n",
            },
            "some .inter files",
        ),
        (
            {"x.inter": "user_id:token\titem_id:token\nu\ta\n", "x.random": "ghost\ta b\n"},
            "ghost",
        ),
        ({"x.inter": "user_id:token\titem_id:token\nu\ta\n", "x.random": "u\n"}, "line 1"),
    ],
)
def test_bad_recbole_files(tmp_path: Path, files: dict[str, str], pattern: str) -> None:
    folder = write(tmp_path / "x", files)
    with pytest.raises(DatasetError, match=pattern):
        load_recbole(folder)
