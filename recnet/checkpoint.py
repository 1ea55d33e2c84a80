"""Checkpoints: the whole mutable state of a run after a completed step, stored in its trace.

Pipeline position: written by the runner in the same transaction as a step's trace rows (so a
checkpoint and the rows it accounts for land together, even under ``kill -9``); read by
``recnet simulate --resume``, which truncates the trace after the checkpoint's step and continues.
Steps completed after the newest checkpoint are simply run again: the offline brain is
deterministic and an LLM brain's calls are answered from the record/replay cache, so nothing is
paid twice and no row is duplicated.

The state is pickled straight into a zstandard stream (level ``ZSTD_LEVEL``: a checkpoint is ~40 %
smaller at ~0.1 s per 20 MB, and the stream holds compressed bytes, not the whole pickle) and
spooled to a temporary file, then stored in parts of at most ``PART_BYTES`` when it is larger than
that (SQLite holds at most 1 GB in one value and copies each value it writes). Checkpoints of
format ``pickle/2``, written uncompressed by earlier versions, still load. Only load checkpoints
from trace files you trust (pickle can run code); recnet never loads a checkpoint from anywhere
else.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import zstandard

from recnet.brain.base import OperationCounts
from recnet.context import RunContext
from recnet.errors import TraceError
from recnet.trace.rows import Spool, SpooledBlob
from recnet.world.world import World

FORMAT = "pickle/2+zstd"
#: Uncompressed pickles, as written before compression; still readable.
PLAIN_FORMAT = "pickle/2"
#: zstandard level: 3 (its default) gave 1.65x on a 10k-agent checkpoint, level 1 1.55x; the
#: float weights that fill a checkpoint do not compress much further at any level.
ZSTD_LEVEL = 3


class Checkpointed(Protocol):
    """A part of a run that carries state across a checkpoint besides the world: the brain, the
    forward phase, the backward phase. ``state()`` returns a typed, picklable value that
    ``restore(state)`` puts back into a freshly built part."""

    def state(self) -> object: ...

    def restore(self, state: object) -> None: ...


@dataclass
class Checkpoint:
    """Everything needed to continue after ``step``."""

    step: int
    world: World
    operations: OperationCounts
    run_stats: dict[str, int]
    parts: dict[str, object]  # part name ("brain", "forward", "backward") → its state()

    @classmethod
    def of(
        cls,
        step: int,
        world: World,
        operations: OperationCounts,
        run_stats: Mapping[str, int],
        parts: Mapping[str, Checkpointed],
    ) -> Checkpoint:
        return cls(
            step, world, operations, dict(run_stats), {n: p.state() for n, p in parts.items()}
        )

    def restore(self, parts: Mapping[str, Checkpointed]) -> None:
        """Give each rebuilt part the state it had (parts the checkpoint lacks are left alone)."""
        for name, part in parts.items():
            if name in self.parts:
                part.restore(self.parts[name])


#: Bytes per stored part. SQLite refuses a value above 1 GB (a 300k-agent world pickles to
#: ~0.7-1.2 GB), and it copies every value it is given while the row is written, so a part's size
#: is also extra memory at the checkpoint: 16 MB parts took the 30k-agent run's peak from 1,137 to
#: 1,020 MB against a single 91 MB part.
PART_BYTES = 1 << 24


def dump(checkpoint: Checkpoint) -> list[SpooledBlob]:
    """The compressed, pickled checkpoint in parts of at most ``PART_BYTES`` (one part for small
    worlds), spooled to an anonymous temporary file (in ``TMPDIR``; removed when the parts are
    written and dropped, or when the process ends): the parts are read back one at a time as the
    trace writes them, so a checkpoint's bytes (835 MB for a 1M-agent world before its first
    step) are never all in memory."""
    spool = Spool()
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    try:
        with compressor.stream_writer(spool.file, closefd=False) as stream:
            pickle.Pickler(stream, protocol=pickle.HIGHEST_PROTOCOL).dump(checkpoint)
    except OSError as exc:  # a full or unwritable TMPDIR; the previous checkpoint stays
        raise TraceError(
            f"could not spool the checkpoint of step {checkpoint.step} to a temporary file ({exc})",
            "free space in the temporary directory, or point TMPDIR at a larger disk",
        ) from exc
    size = spool.file.tell()
    starts = range(0, size, PART_BYTES) if size else range(1)
    return [SpooledBlob(spool, start, min(PART_BYTES, size - start)) for start in starts]


def stored_format(n_parts: int) -> str:
    """``checkpoints.format`` of a checkpoint stored in ``n_parts`` parts."""
    return FORMAT if n_parts == 1 else f"{FORMAT};parts={n_parts}"


class _PartReader(io.RawIOBase):
    """A read-only file over ``parts`` in order (what ``pickle.load`` reads a checkpoint from)."""

    def __init__(self, parts: Sequence[bytes]) -> None:
        self._parts = [memoryview(part) for part in parts]
        self._index = 0
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        while self._index < len(self._parts):
            part = self._parts[self._index]
            if self._offset < len(part):
                n = min(len(target), len(part) - self._offset)
                target[:n] = part[self._offset : self._offset + n]
                self._offset += n
                return n
            self._index, self._offset = self._index + 1, 0
        return 0


def load(blob: bytes, fmt: str, more_parts: Sequence[bytes] = ()) -> Checkpoint:
    """Unpickle a checkpoint: ``blob`` is ``checkpoints.state``, ``more_parts`` its
    ``checkpoint_parts`` rows in part order (a format ending in ``;parts=N`` says how many)."""
    base, _, count = fmt.partition(";parts=")
    if base not in (FORMAT, PLAIN_FORMAT):
        raise TraceError(
            f"checkpoint format {fmt!r} is not readable by this recnet ({FORMAT})",
            "resume with the recnet version that wrote the run",
        )
    if len(more_parts) + 1 != (int(count) if count else 1):
        raise TraceError(
            f"the checkpoint in this trace has {len(more_parts) + 1} of its {count or 1} parts",
            "start the run again",
        )
    # unpickled as a stream over the parts: never a joined copy of them all
    stream: io.RawIOBase | zstandard.ZstdDecompressionReader = _PartReader([blob, *more_parts])
    if base == FORMAT:
        stream = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    try:
        checkpoint = pickle.load(io.BufferedReader(stream))
    except Exception as exc:  # damaged bytes can fail anywhere in the unpickler
        raise TraceError(
            f"the checkpoint in this trace is damaged or unreadable ({type(exc).__name__}: {exc})",
            "start the run again, or resume with the recnet version that wrote it",
        ) from exc
    if not isinstance(checkpoint, Checkpoint):
        raise TraceError("the checkpoint in this trace is damaged", "start the run again")
    return checkpoint


def add_checkpoint(
    ctx: RunContext, world: World, step: int, parts: Mapping[str, Checkpointed]
) -> None:
    """Queue the state after ``step``; it is written in the step's own transaction."""
    checkpoint = Checkpoint.of(step, world, ctx.brain.operations, ctx.stats, parts)
    blobs = dump(checkpoint)
    # parts first: the checkpoints row is what makes a checkpoint count (and what removes the
    # previous one), so a batch written between the two never leaves a checkpoint without parts
    if len(blobs) > 1:
        ctx.store.add(
            "checkpoint_parts",
            [
                {"run_id": ctx.run_id, "step": step, "part": part, "data": blob}
                for part, blob in enumerate(blobs[1:], start=1)
            ],
        )
    ctx.store.add(
        "checkpoints",
        [
            {
                "run_id": ctx.run_id,
                "step": step,
                "created_at": ctx.clock(),
                "format": stored_format(len(blobs)),
                "state": blobs[0],
            }
        ],
    )
