"""One entry point from dataset settings to a filtered, chronological ``Dataset``.

Pipeline position: right after scenario validation. ``load_dataset`` dispatches on
``dataset.kind`` to the MovieLens loader (after ``recnet.data.download`` has found or fetched the
archive), the RecBole atomic-file loader or the synthetic generator, then applies the scenario's
filters (``recnet.data.filters``). The result's interactions are sorted by (timestamp, file
order) and every interacted item is in ``items``.
"""

from __future__ import annotations

from pathlib import Path

from recnet.config.scenario import DatasetSettings
from recnet.data.download import BASE_URL, resolve_movielens
from recnet.data.filters import apply_filters
from recnet.data.movielens import load_movielens
from recnet.data.recbole import load_recbole
from recnet.data.synthetic import generate_synthetic
from recnet.data.types import Dataset
from recnet.errors import DatasetError


def load_raw(settings: DatasetSettings, seed: int, *, base_url: str = BASE_URL) -> Dataset:
    """The dataset as its loader produced it, before the scenario's filters."""
    if settings.kind == "movielens":
        path = resolve_movielens(settings, base_url=base_url)
        name = settings.variant if settings.path is None else None
        return load_movielens(path, name)
    if settings.kind == "recbole":
        if settings.path is None:
            raise DatasetError(
                "dataset.kind=recbole needs dataset.path",
                "set dataset.path to the folder holding <name>.inter (and .item, .random)",
            )
        return load_recbole(Path(settings.path), settings.name)
    return generate_synthetic(settings.synthetic, seed)


def load_dataset(settings: DatasetSettings, seed: int, *, base_url: str = BASE_URL) -> Dataset:
    """Load the dataset the settings describe and apply their filters (seeded by ``seed``)."""
    return apply_filters(load_raw(settings, seed, base_url=base_url), settings, seed)
