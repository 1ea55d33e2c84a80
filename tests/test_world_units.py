"""Unit tests of the world's building blocks: profiles, buffer, filter rules, routing maths."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from recnet.config.scenario import FilterSettings
from recnet.world import embedding, routing
from recnet.world.buffer import MessageBuffer, Multicast, RouterMessage
from recnet.world.embedding import AttributeSpace, HashingEmbedder
from recnet.world.profile import changes, cosine, group_by_category, normalized, render, top
from recnet.world.routing import (
    nearest_centroids,
    nearest_router,
    select_recipients,
    spherical_kmeans,
)
from recnet.world.rules import FilterMemory, default_rules


def message(n: int, step: int = 0, score: float = 0.5, **attributes: float) -> RouterMessage:
    return RouterMessage(n, "r:0", "u:1", step, score, attributes or {"genre:comedy": 1.0}, "")


# profiles ------------------------------------------------------------------------------------


def test_cosine_and_normalized_by_hand() -> None:
    a = {"x": 3.0, "y": 4.0}
    b = {"x": 1.0}
    assert cosine(a, b) == pytest.approx(3 / 5)
    assert cosine(a, {}) == 0.0
    assert normalized(a) == pytest.approx({"x": 0.6, "y": 0.8})


def test_top_keeps_largest_absolute_weights_and_drops_zeros() -> None:
    weights = {"a": 0.1, "b": -0.9, "c": 0.5, "d": 0.0, "e": 0.5}
    assert set(top(weights, 2)) == {"b", "c"}  # tie c/e at the cut: the earlier one
    assert top(weights, 10) == {"a": 0.1, "b": -0.9, "c": 0.5, "e": 0.5}


def test_changes_reports_signed_largest_deltas() -> None:
    before = {"a": 1.0, "b": 0.5}
    after = {"a": 0.2, "c": 0.3}
    assert changes(before, after, 2) == pytest.approx({"a": -0.8, "b": -0.5})
    assert changes(before, before, 5) == {}


def test_render_and_grouping() -> None:
    text = render({"genre:comedy": 0.6, "genre:horror": -0.2})
    assert text == "Likes: genre comedy (0.60). Dislikes: genre horror (-0.20)."
    assert render({}) == "No stated preferences yet."
    assert group_by_category(["genre:a", "era:1990s", "genre:b"]) == {
        "genre": ["a", "b"],
        "era": ["1990s"],
    }


# buffer --------------------------------------------------------------------------------------


def test_buffer_drops_oldest_when_full() -> None:
    buffer = MessageBuffer(2)
    assert buffer.push(message(1)) is None
    assert buffer.push(message(2)) is None
    assert buffer.is_full
    dropped = buffer.push(message(3))
    assert dropped is not None and dropped.message_id == 1
    assert [m.message_id for m in buffer.drain()] == [2, 3]
    assert len(buffer) == 0


def test_buffer_can_drop_newest_instead() -> None:
    buffer = MessageBuffer(1, overflow="drop_newest")
    buffer.push(message(1))
    dropped = buffer.push(message(2))
    assert dropped is not None and dropped.message_id == 2
    assert [m.message_id for m in buffer.peek()] == [1]


def test_buffer_builds_each_message_from_its_shared_multicast() -> None:
    snapshot = {"genre:drama": 0.8}
    multicast = Multicast("r:3", 5, snapshot, "likes drama")
    buffers = [MessageBuffer(4, owner=f"u:{k}") for k in range(2)]
    for k, buffer in enumerate(buffers):
        assert buffer.add(multicast, 10 + k, 0.25 * (k + 1)) is None
    first, second = (buffer.peek()[0] for buffer in buffers)
    assert first == RouterMessage(10, "r:3", "u:0", 5, 0.25, snapshot, "likes drama")
    assert (second.client_id, second.message_id, second.score) == ("u:1", 11, 0.5)
    assert first.attributes is second.attributes is snapshot  # one snapshot, not a copy each
    assert buffers[0].router_ids() == ["r:3"] and len(buffers[0].drain()) == 1
    assert len(buffers[0]) == 0 and buffers[0].peek() == []


def test_a_buffer_holds_one_clients_messages() -> None:
    buffer = MessageBuffer(4)
    buffer.push(message(1))  # the first message names the owner
    assert buffer.owner == message(1).client_id
    other = RouterMessage(2, "r:1", "u:other", 0, 0.5, {}, "")
    with pytest.raises(ValueError, match="u:other"):
        buffer.push(other)


def test_buffer_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        MessageBuffer(0)


# filter rules --------------------------------------------------------------------------------


def memory(relevance: str = "content", **settings: float) -> FilterMemory:
    filters = FilterSettings(**settings, relevance=relevance)
    return FilterMemory(default_rules(filters), relevance=filters.relevance)


def test_rules_decide_in_order_with_the_deciding_rule() -> None:
    rules = memory(recency_steps=2, min_relevance=0.3, conflict_threshold=0.4)
    profile = {"genre:comedy": 1.0, "genre:horror": -0.8}
    assert rules.decide(message(1, step=0), now=5, profile=profile) == ("dropped", "rule-recency")
    horror = message(2, step=5, score=0.9, **{"genre:horror": 1.0})
    assert rules.decide(horror, now=5, profile=profile) == ("rejected", "rule-conflict")
    weak = message(3, step=5, score=0.9, **{"genre:drama": 1.0})
    assert rules.decide(weak, now=5, profile=profile) == ("rejected", "rule-min_relevance")
    good = message(4, step=5, score=0.9)
    assert rules.decide(good, now=5, profile=profile) == ("accepted", None)


def test_min_relevance_reads_the_content_not_the_routing_score() -> None:
    rules = memory(min_relevance=0.2)
    profile = {"genre:comedy": 1.0, "tag:satire": 0.5}
    # routed with a high score, but about something else (orthogonal) or the opposite taste
    orthogonal = message(1, step=0, score=0.95, **{"genre:western": 1.0})
    opposite = message(2, step=0, score=0.95, **{"genre:comedy": -1.0, "tag:satire": -0.5})
    # routed with a low score, yet close to the client's own profile (cos ≈ 0.95)
    close = message(3, step=0, score=-0.5, **{"genre:comedy": 0.8, "tag:satire": 0.6})
    assert rules.decide(orthogonal, 0, profile) == ("rejected", "rule-min_relevance")
    assert rules.decide(opposite, 0, profile) == ("rejected", "rule-min_relevance")
    assert rules.decide(close, 0, profile) == ("accepted", None)
    assert rules.relevance_of(close, profile) == pytest.approx(cosine(close.attributes, profile))
    # an empty own profile has nothing to be relevant to: the rule lets everything pass
    assert rules.decide(orthogonal, 0, {}) == ("accepted", None)


def test_min_relevance_can_still_read_the_routing_score() -> None:
    rules = memory("routing_score", min_relevance=0.2)
    profile = {"genre:comedy": 1.0}
    far_but_routed = message(1, step=0, score=0.95, **{"genre:western": 1.0})
    close_but_weak = message(2, step=0, score=0.1)
    assert rules.decide(far_but_routed, 0, profile) == ("accepted", None)
    assert rules.decide(close_but_weak, 0, profile) == ("rejected", "rule-min_relevance")
    assert rules.relevance_of(close_but_weak, profile) == 0.1
    copy = rules.replaced(rules.rules, owner="u:1")
    assert copy.relevance == "routing_score"  # an optimised client keeps the setting


def test_rules_have_text_and_executable_forms() -> None:
    rules = memory(max_propagated_share=0.25)
    assert rules.max_share() == 0.25
    for rule in rules.rules:
        assert rule.text and rule.executable() is not None
    changed = rules.rule("min_relevance").with_params(threshold=0.5)  # type: ignore[union-attr]
    assert changed.version == 2 and "0.50" in changed.text


def test_memory_is_bounded() -> None:
    rules = default_rules(FilterSettings())
    with pytest.raises(ValueError):
        FilterMemory(rules, max_rules=len(rules) - 1)


# routing maths -------------------------------------------------------------------------------


def test_hashing_embedder_is_deterministic_and_unit_length() -> None:
    first = HashingEmbedder(64).embed(["genre:comedy", "tag:dark comedy"])
    again = HashingEmbedder(64).embed(["genre:comedy", "tag:dark comedy"])
    assert np.array_equal(first, again)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0)
    other = HashingEmbedder(64).embed(["era:1950s"])
    assert float(first[0] @ first[1]) > float(first[0] @ other[0])  # shared word 'comedy'


def test_hashing_embedder_word_cache_is_bounded_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [f"title:item {n} of the {n % 3} kind" for n in range(40)]
    cached = HashingEmbedder(64)
    expected = cached.embed(texts)
    monkeypatch.setattr(embedding, "WORD_CACHE", 3)
    bounded = HashingEmbedder(64)
    assert np.array_equal(bounded.embed(texts), expected)
    assert np.array_equal(bounded.embed(texts), expected)  # from the cache and recomputed
    assert len(bounded._cache) == 3
    assert len(cached._cache) > 40  # words only: the default cache keeps them all


def test_attribute_space_embeds_weight_maps_as_weighted_sums() -> None:
    space = AttributeSpace(HashingEmbedder(32))
    space.add(["a:x", "a:y"])
    e = space.matrix
    expected = 2 * e[0] + e[1]
    expected /= np.linalg.norm(expected)
    assert np.allclose(space.embed_weights({"a:x": 2.0, "a:y": 1.0}), expected, atol=1e-6)
    assert not space.embed_weights({}).any()


class RemoteLikeEmbedder:
    """An embedder whose answers cannot be made again offline (as a server's)."""

    dim = 16

    def embed(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        rows = rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_pickled_space_leaves_out_the_matrix_a_hashing_embedder_makes_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedding, "REEMBED_ROWS", 7)  # embedded again in several chunks
    space = AttributeSpace(HashingEmbedder(32, salt="s"))
    for batch in (["genre:comedy", "tag:dark comedy"], [f"title:item {n}" for n in range(20)]):
        space.add(batch)  # grown in batches, as a run grows it
    state = space.__getstate__()
    assert state["_matrix"] is None and state["embedder"] is not None
    small, whole = pickle.dumps(space), pickle.dumps(space.matrix)
    assert len(small) < len(whole)  # no matrix, no word cache: names and the recipe
    back = pickle.loads(small)
    assert back.names == space.names and back.index == space.index
    assert back.matrix.dtype == np.float32
    assert np.array_equal(back.matrix.view(np.uint32), space.matrix.view(np.uint32))  # bit for bit
    back.add(["era:1950s"])  # and it grows on
    assert np.array_equal(back.matrix[-1], HashingEmbedder(32, salt="s").embed(["era:1950s"])[0])


def test_a_pickled_space_keeps_the_matrix_of_an_embedder_it_cannot_ask_again() -> None:
    space = AttributeSpace(RemoteLikeEmbedder())
    space.add(["genre:comedy", "genre:drama", "tag:noir"])
    space.add(["era:1950s"])
    assert space._matrix.shape[0] > len(space.names)  # grown by doubling
    state = space.__getstate__()
    assert state["_matrix"].shape[0] == len(space.names)  # spare rows are not pickled
    back = pickle.loads(pickle.dumps(space))
    assert back.embedder is None  # a network client is not pickled; ``attach`` gives it back
    assert np.array_equal(back.matrix, space.matrix)
    with pytest.raises(RuntimeError, match="attach"):
        back.add(["tag:later"])
    back.attach(RemoteLikeEmbedder())
    back.add(["tag:later"])
    assert back.index["tag:later"] == 4


def test_spherical_kmeans_separates_two_directions() -> None:
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0, 0.0]) + 0.05 * rng.standard_normal((20, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.05 * rng.standard_normal((20, 3))
    points = np.vstack([a, b])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels, centroids = spherical_kmeans(points, 2, np.random.default_rng(1))
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1
    assert labels[0] != labels[20]
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0)


def test_nearest_router_and_no_responsible_router() -> None:
    routers = np.array([[1.0, 0.0], [0.0, 1.0]])
    attributes = np.array([[0.9, 0.1], [0.2, 0.8], [-1.0, 0.0]])
    positions, scores = nearest_router(attributes, routers)
    assert positions.tolist() == [0, 1, -1]
    assert scores[0] == pytest.approx(0.9)


def test_select_recipients_threshold_cap_and_order() -> None:
    scores = np.array([0.9, 0.2, 0.5, 0.95, 0.5, -np.inf])
    positions, chosen = select_recipients(scores, tau=0.4, max_recipients=3)
    assert positions.tolist() == [3, 0, 2]  # highest first; tie 0.5: lower position
    assert chosen.tolist() == [0.95, 0.9, 0.5]
    positions, _ = select_recipients(scores, tau=0.99, max_recipients=3)
    assert positions.size == 0
    positions, _ = select_recipients(scores, tau=2.0, max_recipients=10, top_k=2)
    assert positions.tolist() == [3, 0]  # top-k ignores tau
    assert math.isinf(scores[5])


def test_nearest_centroids_in_blocks_equals_one_block() -> None:
    rng = np.random.default_rng(3)
    points = rng.standard_normal((50, 4))
    centroids = rng.standard_normal((6, 4))
    whole = nearest_centroids(points, centroids)
    blocks = nearest_centroids(points, centroids, cells=13)  # blocks of 2 points
    assert np.array_equal(whole[0], blocks[0])
    assert np.allclose(whole[1], blocks[1])
    assert np.array_equal(whole[0], (points @ centroids.T).argmax(axis=1))


def test_spherical_kmeans_in_blocks_clusters_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    points = rng.standard_normal((300, 5))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels, centroids = spherical_kmeans(points, 7, np.random.default_rng(5))
    monkeypatch.setattr(routing, "KMEANS_CELLS", 20)  # blocks of 2 points
    blocked_labels, blocked_centroids = spherical_kmeans(points, 7, np.random.default_rng(5))
    assert np.array_equal(labels, blocked_labels)
    assert np.allclose(centroids, blocked_centroids)


def test_spherical_kmeans_reseeds_every_empty_cluster() -> None:
    # two distinct directions, k = 4: k-means++ must repeat a centroid, so two clusters start
    # empty in the same iteration; each must get its own point
    points = np.vstack([np.tile([1.0, 0.0], (10, 1)), np.tile([0.0, 1.0], (10, 1))])
    labels, _ = spherical_kmeans(points, 4, np.random.default_rng(0))
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]
