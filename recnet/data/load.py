"""One entry point from dataset settings to a filtered, chronological ``Dataset``.

Pipeline position: right after scenario validation. ``load_dataset`` looks ``dataset.kind`` up
in ``recnet.registry.DATASETS`` (the MovieLens loader, after ``recnet.data.download`` has found or
fetched the archive; the RecBole atomic-file loader; the synthetic generator; or a registered
one), then applies the scenario's filters (``recnet.data.filters``). The result's interactions
are sorted by (timestamp, file order) and every interacted item is in ``items``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from recnet.config.scenario import DatasetSettings
from recnet.data.download import BASE_URL, resolve_movielens
from recnet.data.filters import apply_filters
from recnet.data.movielens import load_movielens
from recnet.data.recbole import load_recbole
from recnet.data.synthetic import generate_synthetic
from recnet.data.types import Dataset
from recnet.errors import DatasetError
from recnet.registry import DATASETS


class DatasetLoader(Protocol):
    """What ``recnet.registry.DATASETS`` holds: settings and seed in, a raw ``Dataset`` out."""

    def __call__(self, settings: DatasetSettings, seed: int) -> Dataset: ...


def load_movielens_dataset(
    settings: DatasetSettings, seed: int, *, base_url: str = BASE_URL
) -> Dataset:
    """A MovieLens archive, found or downloaded by ``recnet.data.download``."""
    path = resolve_movielens(settings, base_url=base_url)
    name = settings.variant if settings.path is None else None
    return load_movielens(path, name)


def load_recbole_dataset(settings: DatasetSettings, seed: int) -> Dataset:
    """RecBole atomic files in ``dataset.path``."""
    if settings.path is None:
        raise DatasetError(
            "dataset.kind=recbole needs dataset.path",
            "set dataset.path to the folder holding <name>.inter (and .item, .random)",
        )
    return load_recbole(Path(settings.path), settings.name)


def load_synthetic_dataset(settings: DatasetSettings, seed: int) -> Dataset:
    """The planted-community generator (``dataset.synthetic``)."""
    return generate_synthetic(settings.synthetic, seed)


def load_raw(settings: DatasetSettings, seed: int, *, base_url: str = BASE_URL) -> Dataset:
    """The dataset as its loader (``DATASETS[dataset.kind]``) produced it, before filters."""
    if settings.kind == "movielens" and base_url != BASE_URL:
        return load_movielens_dataset(settings, seed, base_url=base_url)
    loader: DatasetLoader = DATASETS.get(settings.kind)
    return loader(settings, seed)


def load_dataset(settings: DatasetSettings, seed: int, *, base_url: str = BASE_URL) -> Dataset:
    """Load the dataset the settings describe and apply their filters (seeded by ``seed``)."""
    return apply_filters(load_raw(settings, seed, base_url=base_url), settings, seed)
