"""MovieLens loader: a GroupLens archive (zip) or extracted folder → ``Dataset``.

Pipeline position: ``recnet.data.download`` finds the archive, this module parses it,
``recnet.data.load`` applies the scenario's filters. Three layouts are recognised by the files
present (so ``dataset.variant`` only matters for finding and downloading the archive):

* ``ratings.csv`` + ``movies.csv`` (+ ``tags.csv``): ml-latest-small and the other ml-latest /
  ml-25m style releases;
* ``u.data`` (tab-separated) + ``u.item`` ('|'-separated, latin-1, 19 genre flags): ml-100k;
* ``ratings.dat`` + ``movies.dat`` ('::'-separated, latin-1): ml-1m (and ml-10m).

Files may sit in the archive's top folder (``ml-latest-small/ratings.csv``) or directly at its
root. Item text: the title without its ``(1995)`` suffix and with a trailing article moved to the
front ("Usual Suspects, The" → "The Usual Suspects"), genres (``(no genres listed)`` and
``unknown`` dropped), the year from the title or the release date, and tags from ``tags.csv``
lower-cased, stripped, de-duplicated, most frequent first (ties alphabetical).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path, PurePosixPath

from recnet.data.types import Dataset, Interaction, Item
from recnet.errors import DatasetError

RATINGS_FILES = ("ratings.csv", "u.data", "ratings.dat")

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_DROPPED_GENRES = frozenset({"(no genres listed)", "unknown", ""})
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})(?:\s*[-–]\s*(?:\d{4})?\s*)?\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(.+?), (The|A|An)((?:\s*\(.*\))?)$")


class _Archive:
    """Read-only view of a zip file or folder holding one MovieLens release."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            return
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(
                f"{path} is not a readable zip archive ({exc})",
                "re-download it (delete the file and run again with dataset.download=true) "
                "or pass the extracted folder as dataset.path",
            ) from exc

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def listing(self) -> list[str]:
        """Member names (zip) or relative file names (folder), for error messages."""
        if self._zip is not None:
            return [n for n in self._zip.namelist() if not n.endswith("/")]
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file())[
            :50
        ]

    def find(self, basename: str) -> str | None:
        """The shallowest member called ``basename`` (at the root or in a top folder)."""
        if self._zip is not None:
            hits = [
                n
                for n in self._zip.namelist()
                if PurePosixPath(n).name == basename
                and not n.startswith("__MACOSX/")
                and len(PurePosixPath(n).parts) <= 2
            ]
            return min(hits, key=lambda n: (len(PurePosixPath(n).parts), n)) if hits else None
        direct = self.path / basename
        if direct.is_file():
            return basename
        nested = sorted(p for p in self.path.glob(f"*/{basename}") if p.is_file())
        return str(nested[0].relative_to(self.path)) if nested else None

    def top_folder(self, member: str) -> str | None:
        parts = PurePosixPath(member).parts
        return parts[0] if len(parts) > 1 else None

    def read_text(self, member: str, encoding: str) -> str:
        try:
            if self._zip is not None:
                data = self._zip.read(member)
            else:
                data = (self.path / member).read_bytes()
            return data.decode(encoding)
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, EOFError) as exc:
            raise DatasetError(
                f"cannot read {member} in {self.path} ({exc})",
                "the archive looks damaged: delete it and download it again",
            ) from exc


def clean_title(raw: str) -> tuple[str, int | None]:
    """Split ``"Usual Suspects, The (1995)"`` into ``("The Usual Suspects", 1995)``."""
    title = raw.strip()
    year: int | None = None
    match = _YEAR_SUFFIX.search(title)
    if match:
        year = int(match.group(1))
        title = title[: match.start()].rstrip()
    article = _TRAILING_ARTICLE.match(title)
    if article:
        title = f"{article.group(2)} {article.group(1)}{article.group(3)}"
    return title or raw.strip(), year


def _bad_row(member: str, path: Path, line: int, row: object) -> DatasetError:
    return DatasetError(
        f"{member} in {path}: line {line} is malformed ({row!r})",
        "the file is damaged or not a MovieLens release: download it again",
    )


def _parse_csv_ratings(text: str, member: str, path: Path) -> list[Interaction]:
    reader = csv.reader(io.StringIO(text))
    next(reader, None)  # header: userId,movieId,rating,timestamp
    out: list[Interaction] = []
    append = out.append
    try:
        for row in reader:
            if row:
                user, item, rating, ts = row
                append(Interaction(user, item, int(ts), float(rating)))
    except ValueError as exc:
        raise _bad_row(member, path, len(out) + 2, exc) from exc
    return out


def _parse_sep_ratings(text: str, sep: str, member: str, path: Path) -> list[Interaction]:
    out: list[Interaction] = []
    append = out.append
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(sep)
        try:
            user, item, rating, ts = fields[:4]
            append(Interaction(user.strip(), item.strip(), int(ts), float(rating)))
        except ValueError as exc:
            raise _bad_row(member, path, line_no, line) from exc
    return out


def _parse_latest_movies(text: str) -> dict[str, Item]:
    items: dict[str, Item] = {}
    reader = csv.reader(io.StringIO(text))
    next(reader, None)  # movieId,title,genres
    for row in reader:
        if len(row) < 2:
            continue
        title, year = clean_title(row[1])
        raw_genres = row[2].split("|") if len(row) > 2 else []
        genres = tuple(g for g in raw_genres if g not in _DROPPED_GENRES)
        items[row[0]] = Item(row[0], title, genres, year)
    return items


def _parse_100k_movies(text: str) -> dict[str, Item]:
    items: dict[str, Item] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3:
            continue
        item_id = fields[0].strip()
        title, year = clean_title(fields[1])
        if year is None and len(fields[2].strip()) >= 4 and fields[2].strip()[-4:].isdigit():
            year = int(fields[2].strip()[-4:])  # release date like 01-Jan-1995
        flags = fields[5 : 5 + len(ML100K_GENRES)]
        genres = tuple(
            g
            for g, f in zip(ML100K_GENRES, flags, strict=False)
            if f.strip() == "1" and g not in _DROPPED_GENRES
        )
        items[item_id] = Item(item_id, title, genres, year)
    return items


def _parse_1m_movies(text: str) -> dict[str, Item]:
    items: dict[str, Item] = {}
    for line in text.splitlines():
        fields = line.split("::")
        if len(fields) < 2:
            continue
        item_id = fields[0].strip()
        title, year = clean_title(fields[1])
        raw_genres = fields[2].strip().split("|") if len(fields) > 2 else []
        genres = tuple(g for g in raw_genres if g not in _DROPPED_GENRES)
        items[item_id] = Item(item_id, title, genres, year)
    return items


def _parse_tags(text: str) -> dict[str, tuple[str, ...]]:
    counts: dict[str, Counter[str]] = {}
    reader = csv.reader(io.StringIO(text))
    next(reader, None)  # userId,movieId,tag,timestamp
    for row in reader:
        if len(row) < 3:
            continue
        tag = " ".join(row[2].split()).lower()
        if tag:
            counts.setdefault(row[1], Counter())[tag] += 1
    return {
        item: tuple(t for t, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
        for item, c in counts.items()
    }


_MovieParser = Callable[[str], dict[str, Item]]
# ratings file → (field separator or None for CSV, movies file, movies parser, encoding)
_LAYOUTS: dict[str, tuple[str | None, str, _MovieParser, str]] = {
    "ratings.csv": (None, "movies.csv", _parse_latest_movies, "utf-8"),
    "u.data": ("\t", "u.item", _parse_100k_movies, "latin-1"),
    "ratings.dat": ("::", "movies.dat", _parse_1m_movies, "latin-1"),
}


def load_movielens(path: Path, name: str | None = None) -> Dataset:
    """Parse a MovieLens zip or extracted folder into a chronologically sorted ``Dataset``.

    ``name`` defaults to the archive's top folder (e.g. ``ml-latest-small``) or the file stem.
    Every rated item is in ``items``; items without metadata get a bare ``Item`` titled by id.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"MovieLens archive {path} does not exist", "check dataset.path")
    archive = _Archive(path)
    try:
        ratings_member = next((m for f in RATINGS_FILES if (m := archive.find(f))), None)
        if ratings_member is None:
            found = ", ".join(archive.listing()[:12]) or "nothing"
            raise DatasetError(
                f"{path} has no MovieLens ratings file (looked for "
                f"{', '.join(RATINGS_FILES)}; found: {found})",
                "pass an unmodified MovieLens archive (ml-latest-small, ml-100k or ml-1m) or "
                "its extracted folder as dataset.path",
            )
        kind = PurePosixPath(ratings_member).name
        sep, movies_file, parse_movies, encoding = _LAYOUTS[kind]
        text = archive.read_text(ratings_member, encoding)
        if sep is None:
            interactions = _parse_csv_ratings(text, ratings_member, path)
        else:
            interactions = _parse_sep_ratings(text, sep, ratings_member, path)
        movies_member = archive.find(movies_file)
        items = parse_movies(archive.read_text(movies_member, encoding)) if movies_member else {}
        tags_member = archive.find("tags.csv") if kind == "ratings.csv" else None
        if tags_member:
            for item_id, tags in _parse_tags(archive.read_text(tags_member, "utf-8")).items():
                if item_id in items:
                    old = items[item_id]
                    items[item_id] = Item(old.item_id, old.title, old.genres, old.year, tags)
        dataset_name = name or archive.top_folder(ratings_member) or path.stem
    finally:
        archive.close()
    for inter in interactions:
        if inter.item not in items:
            items[inter.item] = Item(inter.item, inter.item)
    interactions.sort(key=attrgetter("timestamp"))  # stable: ties keep file order
    return Dataset(dataset_name, interactions, items, source=str(path))
