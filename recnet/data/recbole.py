"""RecBole atomic files (the format of AgentCF's and RecNet's experiments) → ``Dataset``.

Pipeline position: ``recnet.data.load`` calls ``load_recbole(dataset.path, dataset.name)`` for
``kind: recbole``; filters are applied afterwards.

What the files look like (checked against RecBole's documentation and AgentCF's published data,
github.com/leoleojie/AgentCF-WWW, ``agentcf/dataset/CDs-100-user-dense/``):

* Every atomic file is tab-separated with a typed header: ``name:type`` where type is ``token``,
  ``token_seq`` (space-separated tokens), ``float`` or ``float_seq``.
* General (interaction) format: ``<name>.inter`` with ``user_id:token  item_id:token
  [rating:float]  [timestamp:float]``. Rows become interactions; without a timestamp the row
  order within each user is used.
* Sequential format (AgentCF): ``user_id:token  item_id_list:token_seq  item_id:token`` where
  ``item_id_list`` is the space-separated history before the target ``item_id``. AgentCF ships
  it split into ``<name>.train.inter`` (one row per prefix: history of length 1..n-3),
  ``<name>.valid.inter`` and ``<name>.test.inter`` (one row per user each). A user's sequence is
  rebuilt as the first row's history followed by each row's target; a later row's history must be
  a suffix of what is known so far (histories may be truncated to ``MAX_ITEM_LIST_LENGTH``) or
  extend it. There are no timestamps: the position in the user's sequence is the timestamp, so
  the chronological order interleaves users round-robin, as AgentCF trains them.
* Item metadata: ``<name>.item``; AgentCF names it after the source instead (``CDs.item`` in the
  ``CDs-100-user-dense`` folder), so a folder's only ``*.item`` file is used when ``<name>.item``
  is absent. Its header there is ``item_id:token  title:token_seq  category:token_seq`` with
  categories like ``Pop; Dance Pop`` and HTML entities in titles (``&amp;``); RecBole's own
  conversions use ``movie_title``, ``release_year``, ``class``, ``categories``, ``brand``,
  ``sales_type``. Titles are unescaped and stripped of HTML tags (a title that was only a tag
  falls back to the item id); genre-like fields (genre, genres, class, category, categories)
  become ``Item.genres``; brand, sales_type and tag fields become lower-cased ``Item.tags``.
* ``<name>.user`` (user features) is accepted but not used: recnet's users start from their
  history or a neutral profile.
* Candidates: ``<name>.random`` has no header; each line is ``user<TAB>item item ...`` (100
  randomly sampled items in AgentCF). AgentCF's trainer removes the ground-truth item from the
  list if it occurs there, keeps the first ``recall_budget - 1`` and adds the ground truth. We
  store ``Dataset.candidates[user] = [true item, *negatives in file order]`` where the true item is
  the user's last interaction (AgentCF's test target); the evaluation protocol takes as many
  negatives as it needs from the front. Only users listed in the file get candidates.
"""

from __future__ import annotations

import ast
import html
import re
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from recnet.data.types import Dataset, Interaction, Item
from recnet.errors import DatasetError

_SPLITS = ("train", "valid", "test")
_TITLE_FIELDS = ("title", "movie_title", "item_name", "name")
_YEAR_FIELDS = ("release_year", "year")
_GENRE_FIELDS = ("genre", "genres", "class", "category", "categories")
_TAG_FIELDS = ("tags", "tag", "brand", "sales_type", "keywords")
_HTML_TAG = re.compile(r"<[^>]*>?")


@dataclass(frozen=True, slots=True)
class _Table:
    """One atomic file: field names (type suffix removed), field types and rows."""

    path: Path
    names: list[str]
    types: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None


def _read_table(path: Path) -> _Table:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path} ({exc})", "check the file") from exc
    lines = text.splitlines()
    if not lines:
        raise DatasetError(f"{path} is empty", "a RecBole atomic file needs a typed header")
    names, types = [], []
    for field in lines[0].split("\t"):
        name, _, kind = field.strip().partition(":")
        if not kind:
            raise DatasetError(
                f"{path}: header field {field!r} has no type",
                "RecBole headers look like 'user_id:token<TAB>item_id:token<TAB>rating:float'",
            )
        names.append(name)
        types.append(kind)
    rows = []
    for line in lines[1:]:
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) < len(names):
            row += [""] * (len(names) - len(row))
        rows.append(row)
    return _Table(path, names, types, rows)


def _require(table: _Table, name: str) -> int:
    col = table.column(name)
    if col is None:
        raise DatasetError(
            f"{table.path} has no {name} field (header: {', '.join(table.names)})",
            f"add a '{name}:token' column; recnet reads RecBole's default field names",
        )
    return col


def _number(value: str, table: _Table, field: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise DatasetError(
            f"{table.path}: {field} value {value!r} is not a number", "fix the file"
        ) from exc


def _general_rows(tables: list[_Table]) -> list[Interaction]:
    """``user_id, item_id [, rating] [, timestamp]`` rows → interactions."""
    out: list[Interaction] = []
    position: dict[str, int] = {}
    for table in tables:
        u_col, i_col = _require(table, "user_id"), _require(table, "item_id")
        r_col, t_col = table.column("rating"), table.column("timestamp")
        for row in table.rows:
            user, item = row[u_col].strip(), row[i_col].strip()
            pos = position.get(user, 0)
            position[user] = pos + 1
            ts = int(_number(row[t_col], table, "timestamp")) if t_col is not None else pos
            rating = _number(row[r_col], table, "rating") if r_col is not None else None
            out.append(Interaction(user, item, ts, rating))
    return out


def _sequential_rows(tables: list[_Table]) -> list[Interaction]:
    """``user_id, item_id_list, item_id`` rows → each user's full sequence, position-stamped."""
    sequences: dict[str, list[str]] = {}
    for table in tables:
        u_col, i_col = _require(table, "user_id"), _require(table, "item_id")
        h_col = _require(table, "item_id_list")
        for line_no, row in enumerate(table.rows, start=2):
            user, target = row[u_col].strip(), row[i_col].strip()
            history = row[h_col].split()
            seq = sequences.get(user)
            if seq is None:
                sequences[user] = [*history, target]
            elif not history or seq[-len(history) :] == history:
                seq.append(target)
            elif history[: len(seq)] == seq:
                seq[:] = [*history, target]
            else:
                raise DatasetError(
                    f"{table.path} line {line_no}: the history of user {user} does not continue "
                    "the sequence read so far from the earlier rows",
                    "sequential .inter rows of a user must be prefixes of one sequence, in order "
                    "(train, valid, test)",
                )
    rows: list[Interaction] = []
    for user, seq in sequences.items():
        rows.extend(Interaction(user, item, pos) for pos, item in enumerate(seq))
    return rows


def _clean_title(raw: str, item_id: str) -> str:
    text = " ".join(_HTML_TAG.sub(" ", html.unescape(raw)).split())
    return text or item_id


def _split_values(raw: str, field: str) -> list[str]:
    text = html.unescape(raw).strip()
    if not text:
        return []
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, list):
            return [str(v).strip() for v in parsed if str(v).strip()]
    for sep in (";", "|", ","):
        if sep in text:
            return [v.strip() for v in text.split(sep) if v.strip()]
    if field in ("genre", "class"):  # RecBole's ml-100k: 'class:token_seq' = "Action Comedy"
        return text.split()
    return [text]


def _parse_items(table: _Table) -> dict[str, Item]:
    i_col = _require(table, "item_id")
    title_col = next((c for f in _TITLE_FIELDS if (c := table.column(f)) is not None), None)
    year_col = next((c for f in _YEAR_FIELDS if (c := table.column(f)) is not None), None)
    genre_cols = [(c, f) for c, f in enumerate(table.names) if f in _GENRE_FIELDS]
    tag_cols = [(c, f) for c, f in enumerate(table.names) if f in _TAG_FIELDS]
    items: dict[str, Item] = {}
    for row in table.rows:
        item_id = row[i_col].strip()
        title = _clean_title(row[title_col], item_id) if title_col is not None else item_id
        year = None
        if year_col is not None:
            match = re.search(r"\d{4}", row[year_col])
            year = int(match.group()) if match else None
        genres = [g for c, f in genre_cols for g in _split_values(row[c], f)]
        tags = [t.lower() for c, f in tag_cols for t in _split_values(row[c], f)]
        items[item_id] = Item(
            item_id, title, tuple(dict.fromkeys(genres)), year, tuple(dict.fromkeys(tags))
        )
    return items


def _parse_candidates(path: Path, last_item: dict[str, str]) -> dict[str, list[str]]:
    candidates: dict[str, list[str]] = {}
    unknown: list[str] = []
    text = path.read_text(encoding="utf-8")
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        user, sep, rest = line.partition("\t")
        user = user.strip()
        if not sep or not rest.split():
            raise DatasetError(
                f"{path} line {line_no} is not 'user<TAB>item item ...'",
                "candidate files hold one user and its space-separated candidate items per line",
            )
        if user.endswith(":token"):  # tolerate a RecBole-style header line
            continue
        if user not in last_item:
            unknown.append(user)
            continue
        truth = last_item[user]
        negatives = [i for i in dict.fromkeys(rest.split()) if i != truth]
        candidates[user] = [truth, *negatives]
    if unknown:
        raise DatasetError(
            f"{path} lists {len(unknown)} user(s) with no interactions, e.g. "
            f"{', '.join(unknown[:5])}",
            "use the candidate file that belongs to this dataset's .inter files",
        )
    return candidates


def _only_file(folder: Path, name: str, suffix: str) -> Path | None:
    preferred = folder / f"{name}{suffix}"
    if preferred.is_file():
        return preferred
    matches = sorted(
        p for p in folder.glob(f"*{suffix}") if p.is_file() and not p.name.startswith(".")
    )
    return matches[0] if len(matches) == 1 else None


def load_recbole(folder: Path, name: str | None = None) -> Dataset:
    """Load ``<name>.inter`` (or its train/valid/test split) plus optional ``.item``/``.random``.

    ``name`` defaults to the folder name. See the module docstring for the formats.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(
            f"RecBole folder {folder} does not exist or is not a folder",
            "point dataset.path at the folder holding <name>.inter",
        )
    name = name or folder.name
    whole = folder / f"{name}.inter"
    split_paths = [folder / f"{name}.{s}.inter" for s in _SPLITS]
    if whole.is_file():
        tables = [_read_table(whole)]
    elif any(p.is_file() for p in split_paths):
        tables = [_read_table(p) for p in split_paths if p.is_file()]
    else:
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:12]) or "nothing"
        raise DatasetError(
            f"no {name}.inter or {name}.train/valid/test.inter in {folder} (found: {present})",
            "set dataset.name to the file stem of the .inter files",
        )
    sequential = [t.column("item_id_list") is not None for t in tables]
    if any(sequential) and not all(sequential):
        raise DatasetError(
            f"{folder}: some .inter files have an item_id_list field and some do not",
            "use one format (general or sequential) for all split files",
        )
    interactions = _sequential_rows(tables) if all(sequential) else _general_rows(tables)
    interactions.sort(key=attrgetter("timestamp"))

    item_file = _only_file(folder, name, ".item")
    items = _parse_items(_read_table(item_file)) if item_file else {}
    for inter in interactions:
        if inter.item not in items:
            items[inter.item] = Item(inter.item, inter.item)

    candidates = None
    random_file = _only_file(folder, name, ".random")
    if random_file is not None:
        last_item = {i.user: i.item for i in interactions}
        candidates = _parse_candidates(random_file, last_item)
        for items_list in candidates.values():
            for item_id in items_list:
                if item_id not in items:
                    items[item_id] = Item(item_id, item_id)
    return Dataset(name, interactions, items, candidates=candidates, source=str(folder))
