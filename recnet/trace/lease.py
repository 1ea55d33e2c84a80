"""One writer per trace: a lease on ``<trace>.lock`` held for the whole of a run.

Pipeline position: taken by the composition root (``recnet.runner``) before it opens a trace for
writing (a new run or a resume) and released when the run ends. A second ``simulate`` or
``--resume`` of the same trace is refused with a line naming the holder's pid, instead of two
writers truncating and appending each other's steps.

The lease is an exclusive, non-blocking ``flock`` on the lock file, which also stores the
holder's pid and host. The kernel drops the lock when its process dies (kill -9, a crash), so a
stale lease left by a dead process is simply taken over: the file is there, but nobody holds it.
Readers (``recnet traces``, reports) never take the lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from recnet.errors import TraceBusy, TraceError


def lock_path(trace_path: Path) -> Path:
    """The lock file beside a trace: ``runs/x.sqlite`` → ``runs/x.sqlite.lock``."""
    return trace_path.with_name(trace_path.name + ".lock")


def prepare_trace_folder(trace_path: Path) -> None:
    """Create the trace's folder, or say in one line why it cannot be used."""
    parent = trace_path.parent
    for folder in (parent, *parent.parents):
        if folder.exists() and not folder.is_dir():
            raise TraceError(
                f"cannot write the trace {trace_path}: {folder} is a file, not a folder",
                "pass --trace (or trace.path) a path inside a folder, e.g. runs/run.sqlite",
            )
        if folder.exists():
            break
    if trace_path.is_dir():
        raise TraceError(f"trace path {trace_path} is a folder", "give the path of a .sqlite file")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TraceError(
            f"cannot create the trace folder {parent}: {exc.strerror or exc}",
            "choose a writable folder with --trace or trace.dir",
        ) from exc


class TraceLease:
    """An exclusive writer lease on one trace file (see the module docstring)."""

    def __init__(self, trace_path: Path) -> None:
        self.trace_path = Path(trace_path)
        self.path = lock_path(self.trace_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> TraceLease:
        """Take the lease or raise ``TraceBusy`` naming the live holder's pid."""
        prepare_trace_folder(self.trace_path)
        while True:
            fd = self._open_locked()
            # The holder removes the file when it releases: a lock taken on a file that was
            # unlinked (or replaced) meanwhile guards nothing, so take it again on the new file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def _open_locked(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise TraceError(
                f"cannot create the lock file {self.path}: {exc.strerror or exc}",
                "the trace's folder must be writable",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise TraceBusy(
                f"trace {self.trace_path} is being written by another run ({holder})",
                "wait for it to end, or stop it (Ctrl-C) first; one writer per trace",
            ) from None
        except OSError as exc:  # a file system without locks: refuse rather than risk two writers
            os.close(fd)
            raise TraceError(
                f"cannot lock {self.path}: {exc.strerror or exc}",
                "put the trace on a local file system",
            ) from exc
        return fd

    def release(self) -> None:
        """Give the lease back and remove the lock file (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> TraceLease:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read(fd: int) -> str:
    """The holder's line (``pid N on HOST``) as written by ``acquire``."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
