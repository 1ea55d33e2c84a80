"""Trace levels: how much of the router→client message stream a run records.

Pipeline position: built by the runner from ``trace.messages`` once the world exists (``auto``
depends on its size) and handed to the forward phase, which asks it, per decided message, whether
to write the message's row and counts the message's fate per (router, status) for the
``message_counts`` table.

* ``all`` — every message gets its ``messages`` row (a row per delivered message: about 44 rows
  per training interaction on the synthetic world, the largest part of a trace).
* ``sampled`` — a seeded share of messages (``trace.message_share``) gets its row; the choice is a
  hash of the run's seed and the message id, so it is the same on resume and across levels; the
  per-step counts are exact.
* ``aggregate`` — no message rows; per step, router and fate counts only.
* ``none`` — neither.
* ``auto`` (default) — ``all`` for worlds of at most ``AUTO_FULL_CLIENTS`` clients, else
  ``sampled``: a small run keeps everything, a million-agent run's trace stays a few GB.

The level in force is written to the run's ``runs.trace_messages`` column (``sampled 0.01``), so
``recnet traces`` can say what a run did not record. Profile and router versions follow cadences
resolved here too (``trace.profile_every``, ``trace.router_every``), and profile versions a level
of their own (``trace.profiles``, stated in ``runs.trace_profiles``):

* ``changed`` — every version of every client whose profile changed (the last step writes the
  clients changed since the previous write: at a million agents, two million rows, ~4 GB).
* ``sampled`` — the same, for a seeded share of clients (``trace.profile_share``): a sampled
  client's every version is written, the others' none.
* ``none`` — no profile versions.
* ``auto`` (default) — ``changed`` up to ``AUTO_FULL_CLIENTS`` clients, else ``sampled``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MessageLevel = Literal["all", "sampled", "aggregate", "none"]
ProfileLevel = Literal["changed", "sampled", "none"]

#: ``trace.messages: auto`` records every message up to this many clients, else a sample.
AUTO_FULL_CLIENTS = 20_000
#: ``trace.profile_every: 0`` (auto) writes changed profiles this often in small worlds; in worlds
#: above ``AUTO_FULL_CLIENTS`` only at the last step.
AUTO_PROFILE_EVERY = 10

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _salt(seed: int, stream: int) -> int:
    return (seed * _GOLDEN + stream) & _MASK


def _hash_below(key: int, salt: int, threshold: int) -> bool:
    """Is the splitmix64 hash of ``key`` under ``salt`` below ``threshold`` (a share of 2**64)?"""
    x = (key * _GOLDEN + salt) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return (x ^ (x >> 31)) < threshold


def resolve_level(setting: str, n_clients: int) -> MessageLevel:
    """The level in force for ``trace.messages`` = ``setting`` in a world of ``n_clients``."""
    if setting == "auto":
        return "all" if n_clients <= AUTO_FULL_CLIENTS else "sampled"
    if setting not in ("all", "sampled", "aggregate", "none"):
        raise ValueError(f"unknown trace.messages level {setting!r}")
    return setting  # type: ignore[return-value]


def resolve_profiles(setting: str, n_clients: int) -> ProfileLevel:
    """The level in force for ``trace.profiles`` = ``setting`` in a world of ``n_clients``."""
    if setting == "auto":
        return "changed" if n_clients <= AUTO_FULL_CLIENTS else "sampled"
    if setting not in ("changed", "sampled", "none"):
        raise ValueError(f"unknown trace.profiles level {setting!r}")
    return setting  # type: ignore[return-value]


def resolve_profile_every(setting: int, n_clients: int, n_steps: int) -> int:
    """Steps between profile snapshots for ``trace.profile_every`` = ``setting`` (0 = auto)."""
    if setting > 0:
        return setting
    return AUTO_PROFILE_EVERY if n_clients <= AUTO_FULL_CLIENTS else max(n_steps, 1)


def resolve_router_every(setting: int, n_clients: int, profile_every: int) -> int:
    """Steps between routers' integrate versions for ``trace.router_every`` = ``setting`` (0 =
    auto: every step in small worlds, else the profile cadence ``profile_every``)."""
    if setting > 0:
        return setting
    return 1 if n_clients <= AUTO_FULL_CLIENTS else profile_every


def describe(level: MessageLevel, share: float) -> str:
    """The level as the run row states it: ``all``, ``sampled 0.01``, ``aggregate``, ``none``."""
    return f"sampled {share:g}" if level == "sampled" else level


@dataclass
class MessageTrace:
    """Which decided messages get a ``messages`` row, and the per-router fate counts of a step."""

    level: MessageLevel
    share: float = 1.0
    seed: int = 0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._salt = _salt(self.seed, 0x5BD1E995)
        self._threshold = int(self.share * (1 << 64)) if self.level == "sampled" else 0
        self.rows_wanted = self.level in ("all", "sampled")
        self.counting = self.level in ("sampled", "aggregate")

    @classmethod
    def for_world(cls, setting: str, share: float, seed: int, n_clients: int) -> MessageTrace:
        """The trace of ``trace.messages`` = ``setting`` in a world of ``n_clients``."""
        level = resolve_level(setting, n_clients)
        return cls(level, share if level == "sampled" else 1.0, seed)

    def describe(self) -> str:
        """The level as the run row states it."""
        return describe(self.level, self.share)

    def keep(self, message_id: int) -> bool:
        """Does this message get its own row? (all: yes; sampled: a seeded hash decides)."""
        if self.level == "all":
            return True
        return self.level == "sampled" and _hash_below(message_id, self._salt, self._threshold)

    def count(self, router_id: str, status: str, n: int = 1) -> None:
        if self.counting:
            self.counts[(router_id, status)] += n

    def count_rows(self, run_id: str, step: int) -> list[dict[str, object]]:
        """The step's ``message_counts`` rows (then forgets them)."""
        rows: list[dict[str, object]] = [
            {"run_id": run_id, "step": step, "router_id": r, "status": s, "n": n}
            for (r, s), n in sorted(self.counts.items(), key=_router_order)
        ]
        self.counts.clear()
        return rows

    def count_all(self, pairs: Iterable[tuple[str, str]]) -> None:
        for router_id, status in pairs:
            self.count(router_id, status)


@dataclass
class ProfileTrace:
    """Which clients' profile versions get rows (``trace.profiles`` as resolved for a world).

    A client is kept or not as a whole, by a seeded hash of its position in ``World.clients``
    (fixed for a dataset, and the same on resume), so a sampled client's history is complete.
    """

    level: ProfileLevel
    share: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        self._salt = _salt(self.seed, 0x2545F4914F6CDD1D)
        self._threshold = int(self.share * (1 << 64)) if self.level == "sampled" else 0

    @classmethod
    def for_world(cls, setting: str, share: float, seed: int, n_clients: int) -> ProfileTrace:
        """The profile trace of ``trace.profiles`` = ``setting`` in a world of ``n_clients``."""
        level = resolve_profiles(setting, n_clients)
        return cls(level, share if level == "sampled" else 1.0, seed)

    @property
    def recorded(self) -> bool:
        """Does any client get profile versions?"""
        return self.level != "none"

    def keep(self, position: int) -> bool:
        """Are the versions of the client at ``position`` in ``World.clients`` written?"""
        if self.level == "changed":
            return True
        return self.level == "sampled" and _hash_below(position, self._salt, self._threshold)

    def describe(self) -> str:
        """The level as the run row states it: ``changed``, ``sampled 0.01``, ``none``."""
        return f"sampled {self.share:g}" if self.level == "sampled" else self.level


def profile_note(level: str) -> str | None:
    """What a run's profile level left out, for reports (None when nothing was)."""
    if level == "changed":
        return None
    if level.startswith("sampled"):
        return (
            f"trace.profiles={level}: profile versions were recorded for a seeded share of "
            "clients only"
        )
    return "trace.profiles=none: this run recorded no profile versions"


def _router_order(entry: tuple[tuple[str, str], int]) -> tuple[int, str, str]:
    (router_id, status), _ = entry
    head, _, number = router_id.partition(":")
    return (int(number) if number.isdigit() else -1, head, status)


def run_level(run: Mapping[str, Any]) -> str:
    """The message level a run row states (traces written before levels existed hold ``all``)."""
    return str(run.get("trace_messages") or "all")


def run_profile_level(run: Mapping[str, Any]) -> str:
    """The profile level a run row states (traces written before it hold ``changed``, or
    ``none`` for runs with ``trace.profiles: none``, which the note cannot tell apart)."""
    return str(run.get("trace_profiles") or "changed")


def level_note(level: str) -> str | None:
    """What a run's message level left out, for reports (None when nothing was)."""
    if level == "all":
        return None
    if level.startswith("sampled"):
        return (
            f"trace.messages={level}: message rows are a seeded sample; exact per-router fate "
            "counts are in message_counts"
        )
    if level == "aggregate":
        return (
            "trace.messages=aggregate: no message rows were recorded, only per-step router and "
            "fate counts (message_counts)"
        )
    return "trace.messages=none: this run recorded no router messages"
