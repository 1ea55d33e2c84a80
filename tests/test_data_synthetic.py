"""Synthetic planted-community generator: ground truth consistent with the data, seeded."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest
from pydantic import ValidationError

from recnet.config.scenario import DatasetSettings, SyntheticSettings
from recnet.data.load import load_dataset
from recnet.data.synthetic import HORIZON, START_TIME, generate_synthetic
from recnet.data.types import Dataset
from recnet.errors import DatasetError

SETTINGS = SyntheticSettings(
    n_users=300,
    n_items=240,
    n_communities=6,
    attributes_per_community=5,
    interactions_per_user=20,
    noise=0.1,
    n_drifts=3,
)


@pytest.fixture(scope="module")
def world() -> Dataset:
    return generate_synthetic(SETTINGS, seed=11)


def preferred_at(ds: Dataset, community: int, timestamp: int) -> int:
    """The community whose items ``community`` prefers at ``timestamp``, from the drift log."""
    assert ds.ground_truth is not None
    preferred = community
    for drift in ds.ground_truth.drifts:
        if drift.community == community and drift.timestamp <= timestamp:
            attrs = ds.ground_truth.community_attributes
            preferred = next(c for c, a in attrs.items() if a == drift.to_attributes)
    return preferred


def test_shape_and_order(world: Dataset) -> None:
    assert len(world.users) == SETTINGS.n_users
    assert len(world.items) == SETTINGS.n_items
    counts = Counter(i.user for i in world.interactions)
    assert set(counts.values()) == {SETTINGS.interactions_per_user}
    times = [i.timestamp for i in world.interactions]
    assert times == sorted(times)
    per_user = Counter((i.user, i.item) for i in world.interactions)
    assert max(per_user.values()) == 1  # nobody picks the same item twice
    assert world.source == "synthetic" and world.candidates is None


def test_ground_truth_is_consistent(world: Dataset) -> None:
    gt = world.ground_truth
    assert gt is not None
    assert set(gt.user_community) == set(world.users)
    assert set(gt.item_community) == set(world.items)
    assert set(gt.community_attributes) == set(range(SETTINGS.n_communities))
    all_attrs = [a for attrs in gt.community_attributes.values() for a in attrs]
    assert len(all_attrs) == len(set(all_attrs)) == 6 * 5
    sizes = Counter(gt.user_community.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1  # balanced communities
    for item_id, item in world.items.items():
        own = set(gt.community_attributes[gt.item_community[item_id]])
        assert set(item.genres) <= own and len(item.genres) == 2
        foreign = [t for t in item.tags if t not in own]
        assert len(foreign) <= 1 and all(t in all_attrs for t in foreign)


def test_drifts_are_scheduled_and_followed(world: Dataset) -> None:
    gt = world.ground_truth
    assert gt is not None and len(gt.drifts) == SETTINGS.n_drifts
    stamps = [d.timestamp for d in gt.drifts]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for drift in gt.drifts:
        members = {u for u, c in gt.user_community.items() if c == drift.community}
        assert set(drift.users) == members
        assert drift.from_attributes != drift.to_attributes
        assert drift.to_attributes in gt.community_attributes.values()
    hits = Counter()
    after_drift = Counter()
    drifted = {d.community: d.timestamp for d in gt.drifts}
    for inter in world.interactions:
        comm = gt.user_community[inter.user]
        target = preferred_at(world, comm, inter.timestamp)
        hit = gt.item_community[inter.item] == target
        hits[hit] += 1
        if comm in drifted and inter.timestamp >= drifted[comm]:
            after_drift[hit] += 1
    share = hits[True] / sum(hits.values())
    assert 0.85 <= share <= 0.95  # 1 - noise, up to sampling error
    assert after_drift[True] / sum(after_drift.values()) > 0.8  # drifted users follow the drift


def test_seeded_reproducible_and_seed_sensitive() -> None:
    small = SyntheticSettings(n_users=40, n_items=60, n_communities=3, interactions_per_user=6)
    a, b, c = (generate_synthetic(small, seed=s) for s in (5, 5, 6))
    assert a.interactions == b.interactions and a.items == b.items
    assert a.ground_truth == b.ground_truth
    assert a.interactions != c.interactions


def test_no_drift_without_a_second_community() -> None:
    with pytest.raises(ValidationError, match="n_communities >= 2"):
        SyntheticSettings(n_communities=1, n_drifts=1)  # refused before anything runs
    unchecked = SyntheticSettings.model_construct(
        **{**SyntheticSettings().__dict__, "n_communities": 1, "n_drifts": 1}
    )
    with pytest.raises(DatasetError, match="n_communities"):
        generate_synthetic(unchecked, seed=0)  # the generator still checks its own input
    ds = generate_synthetic(SyntheticSettings(n_communities=1, n_drifts=0, n_users=5), seed=0)
    assert ds.ground_truth is not None and ds.ground_truth.drifts == []


def test_load_dataset_filters_restrict_ground_truth() -> None:
    settings = DatasetSettings(
        kind="synthetic",
        max_users=25,
        synthetic=SyntheticSettings(n_users=100, n_items=80, n_communities=4),
    )
    ds = load_dataset(settings, seed=2)
    assert ds.ground_truth is not None
    assert len(ds.users) == 25
    assert set(ds.ground_truth.user_community) == set(ds.users)
    for drift in ds.ground_truth.drifts:
        assert set(drift.users) <= set(ds.users)
    assert len(ds.items) == 80


def test_attribute_pool_runs_past_the_word_lists() -> None:
    many = SyntheticSettings(
        n_users=600,
        n_items=600,
        n_communities=300,
        attributes_per_community=4,
        interactions_per_user=3,
        n_drifts=0,
    )
    gt = generate_synthetic(many, seed=0).ground_truth
    assert gt is not None
    names = [a for attrs in gt.community_attributes.values() for a in attrs]
    assert len(names) == len(set(names)) == 1200


def test_without_noise_every_choice_follows_the_preferred_community() -> None:
    clean = SyntheticSettings(
        n_users=60,
        n_items=90,
        n_communities=3,
        attributes_per_community=4,
        interactions_per_user=10,
        noise=0.0,
        n_drifts=2,
    )
    ds = generate_synthetic(clean, seed=1)
    gt = ds.ground_truth
    assert gt is not None
    for inter in ds.interactions:
        target = preferred_at(ds, gt.user_community[inter.user], inter.timestamp)
        assert gt.item_community[inter.item] == target
    for item_id, item in ds.items.items():
        assert set(item.tags) <= set(gt.community_attributes[gt.item_community[item_id]])


def test_staggered_adoption_sparse_users_and_cold_items_are_recorded() -> None:
    settings = SyntheticSettings(
        n_drifts=4, drift_spread_days=40, adopt_share=0.7, sparse_share=0.3, cold_share=0.2
    )
    data = generate_synthetic(settings, 7)
    truth = data.ground_truth
    assert truth is not None
    spread = 40 * 24 * 3600
    for drift in truth.drifts:
        assert drift.adoption and set(drift.adoption) < set(drift.users)  # a share adopts
        assert all(drift.adopted_at(u) is None for u in set(drift.users) - set(drift.adoption))
        delays = [t - drift.timestamp for t in drift.adoption.values()]
        assert min(delays) >= 0 and max(delays) <= spread and len(set(delays)) > 1
    counts = Counter(i.user for i in data.interactions)
    assert set(counts.values()) == {5, 30}
    assert all(i.timestamp >= truth.item_release.get(i.item, 0) for i in data.interactions)
    assert truth.item_release
    # choices follow each user's recorded taste (up to the noise share)
    in_taste = [
        truth.item_community[i.item] == truth.taste_at(i.user, i.timestamp)
        for i in data.interactions
    ]
    assert sum(in_taste) / len(in_taste) > 0.85
    # a member who has not adopted yet still chooses the old taste
    drift = truth.drifts[0]
    late = max(drift.adoption, key=drift.adoption.__getitem__)
    before = [
        i
        for i in data.interactions
        if i.user == late and drift.timestamp <= i.timestamp < drift.adoption[late]
    ]
    assert all(truth.taste_at(i.user, i.timestamp) == drift.community for i in before)


def test_knobs_at_their_defaults_keep_the_world_unchanged() -> None:
    plain = generate_synthetic(SyntheticSettings(), 3)
    explicit = generate_synthetic(
        SyntheticSettings(
            drift_spread_days=0,
            adopt_share=1.0,
            sparse_share=0,
            cold_share=0,
            drift_window=(0.0, 1.0),
        ),
        3,
    )
    assert plain.interactions == explicit.interactions


def test_drifts_fall_evenly_within_the_drift_window() -> None:
    def drift_times(window: tuple[float, float]) -> list[int]:
        data = generate_synthetic(SyntheticSettings(n_drifts=4, drift_window=window), 11)
        assert data.ground_truth is not None
        return [d.timestamp - START_TIME for d in data.ground_truth.drifts]

    whole = drift_times((0.0, 1.0))
    assert whole == [HORIZON * k // 5 for k in range(1, 5)]
    late = drift_times((0.5, 0.9))
    assert all(0.5 * HORIZON < t < 0.9 * HORIZON for t in late)
    gaps = {b - a for a, b in pairwise(late)}
    assert max(gaps) - min(gaps) <= 1  # evenly spaced (integer seconds)


@pytest.mark.parametrize("window", [(0.6, 0.6), (0.8, 0.2), (-0.1, 0.5), (0.5, 1.2)])
def test_a_drift_window_out_of_order_or_range_names_the_key(window: tuple[float, float]) -> None:
    with pytest.raises(ValidationError, match="drift_window"):
        SyntheticSettings(drift_window=window)


def test_nobody_adopts_when_the_share_is_zero() -> None:
    data = generate_synthetic(SyntheticSettings(n_drifts=3, adopt_share=0.0), 5)
    truth = data.ground_truth
    assert truth is not None and truth.drifts
    assert all(d.adoption == {} for d in truth.drifts)
    assert all(d.adopted_at(u) is None for d in truth.drifts for u in d.users)
    assert not truth.user_taste
