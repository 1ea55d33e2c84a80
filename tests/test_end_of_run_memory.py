"""What keeps the end of a large run within the memory of its steps: merges of many clients in
chunks (``recnet.phases.forward.MERGE_CHUNK``), checkpoints spooled to a file and written part by
part (``recnet.trace.rows.SpooledBlob``), buffers pickled by field and shared attribute names.

These tests check that each keeps what it replaces: the same run, the same bytes in the trace.
"""

from __future__ import annotations

import asyncio
import gc
import io
import pickle
import sqlite3
from pathlib import Path

import pytest

from recnet import checkpoint
from recnet.brain.offline import OfflineBrain
from recnet.data.types import Item
from recnet.errors import TraceError
from recnet.phases import forward, version_cadence
from recnet.runner import simulate
from recnet.trace.rows import Spool, SpooledBlob
from recnet.trace.store import BufferedTraceStore, TraceStore
from recnet.world.buffer import (
    MessageBuffer,
    Multicast,
    RouterMessage,
    _buffer_from_fields,
    _restored_buffer,
)
from recnet.world.content import item_attributes
from tests.test_blas_threads import tiny
from tests.test_checkpoint_pickling import agent_with_messages
from tests.test_trace_store import make_store, run_row, store  # noqa: F401 (fixtures)

MERGE = OfflineBrain.merge
TABLES = {
    "metrics": "SELECT split, model, metric, step, value FROM metrics ORDER BY 1, 2, 3, 4",
    "prequential": "SELECT seq, rank, candidates_json FROM prequential ORDER BY seq",
    "steps": "SELECT step, n_messages, n_accepted, n_rejected, n_dropped FROM steps ORDER BY 1",
    "profiles": "SELECT agent_id, step, kind, attributes_json FROM profile_versions ORDER BY id",
}


def run_recording_merges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> tuple[dict[str, list], list[int]]:
    """The tiny world's trace tables, and the number of clients of each brain merge call."""
    sizes: list[int] = []

    async def recording(self: OfflineBrain, tasks: list) -> list:
        sizes.append(len(tasks))
        return await MERGE(self, tasks)

    monkeypatch.setattr(OfflineBrain, "merge", recording)
    (tmp_path / name).mkdir()
    asyncio.run(simulate(tiny(tmp_path / name, None)))
    db = sqlite3.connect(tmp_path / name / "run-None.sqlite")
    tables = {table: db.execute(sql).fetchall() for table, sql in TABLES.items()}
    db.close()
    return tables, sizes


def test_merges_in_chunks_give_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, whole_sizes = run_recording_merges(tmp_path, monkeypatch, "whole")
    batch = tiny(tmp_path, None).llm.batch_size
    monkeypatch.setattr(forward, "MERGE_CHUNK", 1)  # rounded up to one LLM batch
    chunked, chunked_sizes = run_recording_merges(tmp_path, monkeypatch, "chunked")
    assert max(whole_sizes) > batch  # some flush merges more clients than one chunk
    assert max(chunked_sizes) == batch and sum(chunked_sizes) == sum(whole_sizes)
    assert all(whole[table] for table in TABLES)
    assert chunked == whole


def test_the_final_flush_builds_one_chunk_of_messages_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # buffers hold messages compactly; the flush before evaluation builds ``RouterMessage``s
    # for one merge chunk at a time, and they are gone before the next chunk is drained
    calls: list[tuple[int, int, int]] = []  # (step, messages merged, RouterMessages alive)

    async def recording(self: OfflineBrain, tasks: list) -> list:
        alive = sum(type(obj) is RouterMessage for obj in gc.get_objects())
        calls.append((tasks[0].step, sum(len(t.messages) for t in tasks), alive))
        return await MERGE(self, tasks)

    monkeypatch.setattr(forward, "MERGE_CHUNK", 1)
    monkeypatch.setattr(OfflineBrain, "merge", recording)
    asyncio.run(simulate(tiny(tmp_path, None)))
    last = max(step for step, _, _ in calls)
    final = [(merged, alive) for step, merged, alive in calls if step == last]
    assert len(final) > 1 and sum(merged for merged, _ in final) > max(m for m, _ in final)
    # alive besides the chunk's own: the same few each time (what earlier steps' merges left in
    # the backward phase's log), not the chunks already merged or those still buffered
    assert len({alive - merged for merged, alive in final}) == 1


def spooled(data: bytes, offset: int = 0) -> SpooledBlob:
    spool = Spool()
    spool.file.write(b"\0" * offset + data)
    return SpooledBlob(spool, offset, len(data))


def test_spooled_values_are_written_as_their_bytes(store: TraceStore) -> None:  # noqa: F811
    key = {"run_id": "r1", "step": 0}
    store.add(
        "checkpoint_parts", [{**key, "part": p, "data": spooled(b"p%d" % p, 5)} for p in (1, 2)]
    )
    store.add("checkpoints", [{**key, "created_at": "t", "format": "f", "state": spooled(b"s")}])
    store.commit_step("r1", 0)
    assert [r["state"] for r in store.read("checkpoints", "r1")] == [b"s"]
    assert [r["data"] for r in store.read("checkpoint_parts", "r1")] == [b"p1", b"p2"]


def test_a_spooled_value_that_lost_bytes_is_a_trace_error() -> None:
    blob = spooled(b"abcdef")
    blob.spool.file.truncate(3)
    with pytest.raises(TraceError, match="read 3 of 6"):
        blob.read()


def test_a_checkpoint_is_spooled_in_parts_that_load_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "PART_BYTES", 100)
    world = agent_with_messages(200)  # any picklable state stands in for the world
    state = checkpoint.Checkpoint(3, world, None, {"runs": 1}, {})  # type: ignore[arg-type]
    parts = checkpoint.dump(state)
    assert len(parts) > 2 and all(isinstance(p, SpooledBlob) for p in parts)
    assert all(len(p) == 100 for p in parts[:-1]) and 0 < len(parts[-1]) <= 100
    data = [p.read() for p in parts]
    again = checkpoint.load(data[0], checkpoint.stored_format(len(parts)), data[1:])
    assert again.step == 3 and again.world.buffer.peek() == world.buffer.peek()


def memoised(obj: object) -> int:
    """Objects the pickler memoises for ``obj``, but strings (each message's own text)."""
    pickler = pickle.Pickler(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dump(obj)
    return sum(type(o) is not str for _, o in pickler.memo.copy().values())


def buffers_sharing(n_buffers: int, n_multicasts: int) -> list[MessageBuffer]:
    """``n_buffers`` clients' buffers, each holding one message of each of the multicasts."""
    shared = {"genre:drama": 0.8}
    multicasts = [Multicast(f"r:{k}", 3, shared, f"text {k}") for k in range(n_multicasts)]
    buffers = [MessageBuffer(n_multicasts, owner=f"u:{b}") for b in range(n_buffers)]
    for b, buffer in enumerate(buffers):
        for k, multicast in enumerate(multicasts):
            buffer.add(multicast, b * n_multicasts + k, 0.5 + k / 100)
    return buffers


def test_a_buffer_pickles_by_column_whatever_it_holds() -> None:
    # the pickler keeps every memoised object alive until the dump ends: a buffer costs the same
    # few objects whether it holds 4 or 40 messages (a multicast is memoised once, not per
    # recipient)
    def per_buffer(n_messages: int) -> int:
        return memoised(buffers_sharing(20, n_messages)) - memoised(buffers_sharing(10, n_messages))

    assert per_buffer(40) == per_buffer(4) <= 10 * 10  # 10 buffers, 4 or 40 messages each
    empty = pickle.loads(pickle.dumps(MessageBuffer(3, "drop_newest")))
    assert (len(empty), empty.capacity, empty.overflow) == (0, 3, "drop_newest")


def test_buffers_of_older_checkpoints_still_load() -> None:
    messages = [RouterMessage(k, "r:1", "u:1", 2, 0.5, {"a": 1.0}, "") for k in range(3)]
    older = pickle.dumps(_restored_buffer(4, "drop_oldest", messages))  # how they were pickled
    assert pickle.loads(older).peek() == messages
    by_field = tuple(map(list, zip(*(m.__reduce__()[1] for m in messages), strict=True)))
    assert _buffer_from_fields(4, "drop_oldest", by_field).peek() == messages  # one version's


def test_items_share_their_attribute_names() -> None:
    one, two = (
        item_attributes(Item(key, f"Film {key}", ("Drama",), 1994, ("slow",))) for key in "12"
    )
    shared = [(a, b) for a in one for b in two if a == b]
    assert [a for a, _ in shared] == ["genre:drama", "tag:slow", "era:1990s"]
    assert all(a is b for a, b in shared)


class FullDisk(io.BytesIO):
    def write(self, data: object) -> int:
        raise OSError(28, "No space left on device")


def test_a_full_temporary_directory_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def full_spool(self: Spool) -> None:
        self.file = FullDisk()

    monkeypatch.setattr(Spool, "__init__", full_spool)
    state = checkpoint.Checkpoint(4, agent_with_messages(3), None, {}, {})  # type: ignore[arg-type]
    with pytest.raises(TraceError, match=r"step 4 .*No space left") as caught:
        checkpoint.dump(state)
    assert "TMPDIR" in caught.value.remedy


def test_profile_versions_are_added_in_chunks_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, _ = run_recording_merges(tmp_path, monkeypatch, "whole")
    added: list[int] = []
    add = BufferedTraceStore.add

    def recording(self: BufferedTraceStore, table: str, rows: list) -> None:
        if table == "profile_versions":
            added.append(len(rows))
        add(self, table, rows)

    monkeypatch.setattr(BufferedTraceStore, "add", recording)
    monkeypatch.setattr(version_cadence, "PROFILE_ROWS_PER_ADD", 3)
    chunked, _ = run_recording_merges(tmp_path, monkeypatch, "chunked")
    # after the initial versions (one add at the world's build): 3 rows, or 4 when the third
    # client also adds its propagated profile
    assert max(added[1:]) <= 4 and len(added) > 10
    assert chunked["profiles"] == whole["profiles"] and sum(added) == len(whole["profiles"])
