"""A client's bounded buffer of incoming router messages (forward step 5, reception).

Pipeline position: multicast puts messages in; reception flushes them into the propagated profile.
The buffer only holds and reports; the filter memory and the brain decide what is taken in.
"""

from __future__ import annotations

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


class MessageBuffer:
    """FIFO of at most ``capacity`` messages; ``push`` returns what overflow pushed out."""

    __slots__ = ("_messages", "capacity", "overflow")

    def __init__(self, capacity: int, overflow: Overflow = "drop_oldest") -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        self.capacity = capacity
        self.overflow: Overflow = overflow
        # a list, not a deque: an empty deque costs ~600 bytes, and a world holds a buffer per
        # client (popping the front of a list is O(capacity), which is small)
        self._messages: list[RouterMessage] = []

    def __reduce__(self) -> tuple[object, tuple[int, Overflow, list[object]]]:
        """Pickled as its arguments, its messages' fields in one flat list (see
        ``RouterMessage.__reduce__``): the pickler keeps every object it saves alive until the
        dump ends, and messages one by one cost three objects each (the message, its arguments
        and their tuple), 33 per client in a 30k-agent world at its end; flat, 2 per buffer."""
        flat = [value for message in self._messages for value in _message_fields(message)]
        return _buffer_from_fields, (self.capacity, self.overflow, flat)

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def is_full(self) -> bool:
        return len(self._messages) >= self.capacity

    def push(self, message: RouterMessage) -> RouterMessage | None:
        """Add a message; when the buffer was full, return the message that was dropped."""
        if len(self._messages) < self.capacity:
            self._messages.append(message)
            return None
        if self.overflow == "drop_newest":
            return message
        dropped = self._messages.pop(0)
        self._messages.append(message)
        return dropped

    def drain(self) -> list[RouterMessage]:
        """Remove and return every buffered message, oldest first."""
        messages = self._messages
        self._messages = []
        return messages

    def peek(self) -> list[RouterMessage]:
        """The buffered messages, oldest first, without removing them."""
        return list(self._messages)


def _restored_buffer(
    capacity: int, overflow: Overflow, messages: list[RouterMessage]
) -> MessageBuffer:
    """A buffer as earlier versions pickled it, message by message (their checkpoints load)."""
    buffer = MessageBuffer(capacity, overflow)
    buffer._messages = messages
    return buffer


def _buffer_from_fields(
    capacity: int, overflow: Overflow, flat: list[object] | tuple[list[object], ...]
) -> MessageBuffer:
    """A buffer as ``MessageBuffer.__reduce__`` pickled it: its messages' fields in one list (or,
    as one earlier version wrote them, one list per field)."""
    buffer = MessageBuffer(capacity, overflow)
    if isinstance(flat, tuple):
        buffer._messages = [RouterMessage(*values) for values in zip(*flat, strict=True)]
    else:
        rows = range(0, len(flat), _FIELDS)
        buffer._messages = [RouterMessage(*flat[k : k + _FIELDS]) for k in rows]
    return buffer
