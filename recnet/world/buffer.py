"""A client's bounded buffer of incoming router messages (forward step 5, reception).

Pipeline position: multicast puts messages in; reception flushes them into the propagated profile.
The buffer only holds and reports; the filter memory and the brain decide what is taken in.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Literal

from recnet.world.profile import Weights

Overflow = Literal["drop_oldest", "drop_newest"]


@dataclass(slots=True)
class RouterMessage:
    """A router's profile as multicast to one client in one step.

    ``attributes`` is a snapshot shared by all recipients of the same multicast; treat it as
    read-only. ``message_id`` is unique within a run and orders messages.
    """

    message_id: int
    router_id: str
    client_id: str
    step: int
    score: float
    attributes: Weights
    text: str

    def __reduce__(self) -> tuple[type[RouterMessage], tuple[object, ...]]:
        """Pickled as its constructor's arguments. A checkpoint holds every buffered message
        (~10 per client in the synthetic world), and the default slots state, a dict per
        message, stays alive in the pickler's memo until the dump ends: at 10k agents this
        halves the checkpoint's transient memory (55 -> 32 MB beyond the pickle's bytes)."""
        return RouterMessage, _message_fields(self)


#: A message's fields in constructor order (what both reducers pickle) and how many there are
_message_fields = attrgetter(*(f.name for f in fields(RouterMessage)))
_FIELDS = len(fields(RouterMessage))


@dataclass(frozen=True, slots=True)
class Multicast:
    """What one router sent in one step, shared by the messages of all its recipients.

    A buffer keeps a reference to it and each message's id and score, not a ``RouterMessage``
    per recipient: a million-agent world buffers ~15 M messages, at ~150 bytes each as objects
    (the message, its id and its score) against 24 here.
    """

    router_id: str
    step: int
    attributes: Weights
    text: str

    def __reduce__(self) -> tuple[type[Multicast], tuple[object, ...]]:
        """Pickled as its constructor's arguments (no per-object state dict in the memo)."""
        return Multicast, (self.router_id, self.step, self.attributes, self.text)

    @classmethod
    def of(cls, message: RouterMessage) -> Multicast:
        return cls(message.router_id, message.step, message.attributes, message.text)

    def to(self, client_id: str, message_id: int, score: float) -> RouterMessage:
        """The message as its recipient ``client_id`` received it."""
        return RouterMessage(
            message_id, self.router_id, client_id, self.step, score, self.attributes, self.text
        )


class MessageBuffer:
    """FIFO of at most ``capacity`` messages to one client (``owner``); ``add`` / ``push`` return
    what overflow pushed out.

    Held compactly: each message's multicast (shared with its other recipients), id and score;
    ``drain`` and ``peek`` hand out ``RouterMessage`` objects built on the way out.
    """

    __slots__ = ("_ids", "_multicasts", "_scores", "capacity", "overflow", "owner")

    def __init__(self, capacity: int, overflow: Overflow = "drop_oldest", owner: str = "") -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self.capacity = capacity
        self.overflow: Overflow = overflow
        #: the client whose messages these are ("" until it is known: the agent sets it, or the
        #: first message pushed does)
        self.owner = owner
        # lists and arrays, not deques: an empty deque costs ~600 bytes, and a world holds a
        # buffer per client (popping the front is O(capacity), which is small)
        self._multicasts: list[Multicast] = []
        self._ids = array("q")
        self._scores = array("d")

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Pickled as its arguments and its three columns (the arrays as raw bytes)."""
        columns = (self._multicasts, self._ids, self._scores)
        return _buffer_from_columns, (self.capacity, self.overflow, self.owner, *columns)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def is_full(self) -> bool:
        return len(self._ids) >= self.capacity

    def add(self, multicast: Multicast, message_id: int, score: float) -> RouterMessage | None:
        """Add the message ``message_id`` of ``multicast`` scored ``score`` for this buffer's
        owner; when the buffer was full, return the message that was dropped."""
        if len(self._ids) >= self.capacity:
            if self.overflow == "drop_newest":
                return multicast.to(self.owner, message_id, score)
            dropped = self._multicasts.pop(0).to(self.owner, self._ids.pop(0), self._scores.pop(0))
        else:
            dropped = None
        self._multicasts.append(multicast)
        self._ids.append(message_id)
        self._scores.append(score)
        return dropped

    def push(self, message: RouterMessage) -> RouterMessage | None:
        """Add a message (see ``add``); it must be addressed to this buffer's owner."""
        if not self.owner:
            self.owner = message.client_id
        elif message.client_id != self.owner:
            raise ValueError(
                f"a message to {message.client_id} pushed into the buffer of {self.owner}"
            )
        return self.add(Multicast.of(message), message.message_id, message.score)

    def drain(self) -> list[RouterMessage]:
        """Remove and return every buffered message, oldest first."""
        messages = self.peek()
        self._multicasts = []
        self._ids = array("q")
        self._scores = array("d")
        return messages

    def router_ids(self) -> list[str]:
        """The sender of each buffered message, oldest first (no message is built)."""
        return [multicast.router_id for multicast in self._multicasts]

    def peek(self) -> list[RouterMessage]:
        """The buffered messages, oldest first, without removing them."""
        owner = self.owner
        return [
            multicast.to(owner, message_id, score)
            for multicast, message_id, score in zip(
                self._multicasts, self._ids, self._scores, strict=True
            )
        ]


def _buffer_from_columns(
    capacity: int,
    overflow: Overflow,
    owner: str,
    multicasts: list[Multicast],
    ids: array,
    scores: array,
) -> MessageBuffer:
    """A buffer as ``MessageBuffer.__reduce__`` pickled it."""
    buffer = MessageBuffer(capacity, overflow, owner)
    buffer._multicasts, buffer._ids, buffer._scores = multicasts, ids, scores
    return buffer


def _from_messages(
    capacity: int, overflow: Overflow, messages: Iterable[RouterMessage]
) -> MessageBuffer:
    buffer = MessageBuffer(capacity, overflow)
    for message in messages:
        buffer.push(message)
    return buffer


def _restored_buffer(
    capacity: int, overflow: Overflow, messages: list[RouterMessage]
) -> MessageBuffer:
    """A buffer as earlier versions pickled it, message by message (their checkpoints load)."""
    return _from_messages(capacity, overflow, messages)


def _buffer_from_fields(
    capacity: int, overflow: Overflow, flat: list[object] | tuple[list[object], ...]
) -> MessageBuffer:
    """A buffer as ``MessageBuffer.__reduce__`` pickled it: its messages' fields in one list (or,
    as one earlier version wrote them, one list per field)."""
    if isinstance(flat, tuple):
        messages = [RouterMessage(*values) for values in zip(*flat, strict=True)]
    else:
        messages = [RouterMessage(*flat[k : k + _FIELDS]) for k in range(0, len(flat), _FIELDS)]
    return _from_messages(capacity, overflow, messages)
