"""Benchmark: cost per interaction as the synthetic world grows (3k / 30k / 300k / 1M agents).

Pipeline position: outside the library; drives ``recnet.runner.simulate`` on the synthetic world
at several sizes, each size in its own process (so peak RSS is its own), and reports wall time,
time per training interaction, peak RSS and trace size. World shape (issue 14): 10 interactions per
user, items = 2 x users, one community and one router per 25 users, update_size = users / 10
(about 100 forward steps at every size), the scenario's default trace level.

The baseline is the code before the scale work (commit ``BASELINE_COMMIT``), checked out as a git
worktree in a temporary folder and run as a subprocess of the same script at the small sizes, in
the same invocation, so both columns see the same machine load.

    python experiments/bench_scale.py                      # 3k, 30k, 300k, 1M (+ baseline 3k, 30k)
    python experiments/bench_scale.py --sizes 3000 30000   # a subset (agents = users + items)
    python experiments/bench_scale.py --smoke              # 300 agents, seconds
    python experiments/bench_scale.py --baseline-sizes     # no baseline runs
    python experiments/bench_scale.py --sizes 1000000 --max-rss-gb 20   # stop a size at 20 GB

A size that does not finish within ``--timeout`` seconds, or whose resident memory passes
``--max-rss-gb`` (so a size too large for the machine stops cleanly instead of meeting the kernel's
out-of-memory killer), is reported with how far it got (steps done, from the trace) and the time
per interaction extrapolated from there. While a size runs, a progress line (step, seconds, RSS)
goes to stderr every ``--progress`` seconds. Initialisation (router clustering, memberships, the
initial trace rows and checkpoint) is reported apart as the time until step 0 was done, and the
cost per interaction of the steps after it beside the whole run's. Figures go to
experiments/results/bench_scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "4283dce"
DEFAULT_SIZES = [3_000, 30_000, 300_000, 1_000_000]
DEFAULT_BASELINE_SIZES = [3_000, 30_000]


def overrides_for(agents: int) -> list[str]:
    """Overrides for a synthetic world of ``agents`` = users + items (items = 2 x users)."""
    users = max(agents // 3, 4)
    routers = max(users // 25, 2)
    return [
        "dataset.kind=synthetic",
        f"dataset.synthetic.n_users={users}",
        f"dataset.synthetic.n_items={2 * users}",
        f"dataset.synthetic.n_communities={routers}",
        "dataset.synthetic.interactions_per_user=10",
        f"world.n_routers={routers}",
        f"world.max_routers={max(routers, 60)}",
        f"propagation.update_size={max(users // 10, 1)}",
    ]


def run_one(agents: int, trace_path: Path, extra: Sequence[str]) -> dict[str, float]:
    """Run one size in this process (child mode), with ``extra`` overrides; return its figures."""
    from recnet.config import load_scenario
    from recnet.runner import simulate

    # the scenario of the checkout being measured (the child runs in its root): the baseline's
    # code does not know options added since
    scenario = load_scenario(
        Path.cwd() / "scenarios" / "synthetic.yaml", [*overrides_for(agents), *extra]
    )
    started = time.perf_counter()

    def progress(step: int, total: int) -> None:  # parsed by ``step_times`` (even after a kill)
        seconds = time.perf_counter() - started
        print(f"STEP {step} {seconds:.3f} {total}", file=sys.stderr, flush=True)

    result = asyncio.run(simulate(scenario, trace_path=trace_path, on_step=progress))
    seconds = time.perf_counter() - started
    return {
        "wall_seconds": round(seconds, 2),
        "train_interactions": result.n_train,
        "steps": result.n_steps,
        "ndcg@10": round(result.metrics["recnet"]["ndcg@10"], 4),
    }


def trace_figures(trace_path: Path) -> dict[str, float]:
    """Size of the trace (database + WAL) and how far the run got."""
    size = sum(
        p.stat().st_size for p in trace_path.parent.glob(trace_path.name + "*") if p.is_file()
    )
    figures: dict[str, float] = {"trace_mb": round(size / 1e6, 1)}
    try:
        with sqlite3.connect(f"file:{trace_path}?mode=ro", uri=True, timeout=30) as db:
            step = db.execute("SELECT max(last_completed_step) FROM runs").fetchone()[0]
            done = db.execute("SELECT count(*) FROM interactions").fetchone()[0]
            messages = db.execute("SELECT count(*) FROM messages").fetchone()[0]
        figures.update(steps_done=(step or -1) + 1, interactions_done=done, message_rows=messages)
    except sqlite3.Error:
        pass
    return figures


def step_times(stderr: str) -> dict[int, float]:
    """Seconds from the start at which each completed step was reported by the child."""
    times = {}
    for line in stderr.splitlines():
        report = step_report(line)
        if report is not None:
            times[report[0]] = report[1]
    return times


StepReport = tuple[int, float, int | None]  # (step, seconds since the start, total steps)


def step_report(line: str) -> StepReport | None:
    """``(step, seconds, total steps)`` of a child's ``STEP`` line (the total is absent in lines
    of older children), None for any other line."""
    parts = line.split()
    if len(parts) not in (3, 4) or parts[0] != "STEP":
        return None
    try:
        total = int(parts[3]) if len(parts) == 4 else None
        return int(parts[1]), float(parts[2]), total
    except ValueError:
        return None


def progress_line(agents: int, seconds: float, rss_mb: float, last: StepReport | None) -> str:
    """What a running size has done so far (``last``: its newest ``step_report``)."""
    if last is None:
        where = "building the world"
    else:
        step, _, total = last
        where = f"step {step + 1}/{total} done" if total else f"step {step + 1} done"
    return f"  {agents:,} agents: {where} after {seconds:,.0f} s, RSS {rss_mb:,.0f} MB"


def stepping_figures(trace_path: Path, times: dict[int, float]) -> dict[str, float]:
    """Initialisation (time until step 0 was done) apart from the steps after it: the cost per
    interaction of steps 1..last, which is what "flat in the number of agents" is about."""
    if len(times) < 2:
        return {}
    first, last = min(times), max(times)
    with sqlite3.connect(f"file:{trace_path}?mode=ro", uri=True, timeout=30) as db:
        (done,) = db.execute(
            "SELECT count(*) FROM interactions WHERE step > ? AND step <= ?", (first, last)
        ).fetchone()
    figures = {"until_step0_seconds": round(times[first], 1)}
    if done:
        figures["steps_ms_per_interaction"] = round(1000 * (times[last] - times[first]) / done, 3)
    return figures


def measure(
    code_root: Path,
    agents: int,
    timeout: float,
    extra: Sequence[str] = (),
    max_rss_mb: float = 0.0,
    progress_every: float = 0.0,
) -> dict[str, float | str]:
    """Run one size with the checkout at ``code_root`` in a child process (``extra``: scenario
    overrides added to the world's shape). The child is stopped when it runs longer than
    ``timeout`` seconds or holds more than ``max_rss_mb`` (0: no cap); every ``progress_every``
    seconds (0: never) a progress line goes to stderr."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("RECNET_BENCH_TMP")) as folder:
        trace_path = Path(folder) / "scale.sqlite"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--single",
            str(agents),
            "--trace",
            str(trace_path),
            *(arg for override in extra for arg in ("--set", override)),
        ]
        env = {**os.environ, "PYTHONPATH": str(code_root)}
        started = time.perf_counter()
        child = subprocess.Popen(
            command, cwd=code_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        peak_kb, finished, stopped = 0, False, ""
        out_chunks: list[bytes] = []
        err_chunks: list[bytes] = []
        readers = [_drain(child.stdout, out_chunks), _drain(child.stderr, err_chunks)]
        shown = started
        while True:
            peak_kb = max(peak_kb, _status_kb(child.pid, "VmHWM"))
            try:
                child.wait(timeout=1.0)
                finished = child.returncode == 0
                break
            except subprocess.TimeoutExpired:
                now, rss_mb = time.perf_counter(), _status_kb(child.pid, "VmRSS") / 1024
                if progress_every and now - shown >= progress_every:
                    shown = now
                    last = _last_step(err_chunks)
                    print(progress_line(agents, now - started, rss_mb, last), file=sys.stderr)
                if max_rss_mb and rss_mb > max_rss_mb:
                    stopped = f"at the memory cap: RSS {rss_mb:,.0f} MB > {max_rss_mb:,.0f} MB"
                elif now - started > timeout:
                    stopped = "timeout"
                if stopped:
                    child.kill()
                    child.wait()
                    break
        for reader in readers:
            reader.join()
        out, err = b"".join(out_chunks), b"".join(err_chunks)
        wall = time.perf_counter() - started
        row: dict[str, float | str] = {"agents": agents, **trace_figures(trace_path)}
        with contextlib.suppress(sqlite3.Error):
            row.update(stepping_figures(trace_path, step_times(err.decode())))
        row["peak_rss_mb"] = round(peak_kb / 1024, 1)
        if finished:
            row.update(json.loads(out.decode().strip().splitlines()[-1]))
            row["status"] = "finished"
        else:
            tail = [stopped] if stopped else err.decode().strip().splitlines()[-1:] or ["?"]
            row["status"] = f"stopped after {wall:.0f} s ({tail[0][:120]})"
            row["wall_seconds"] = round(wall, 1)
            row["train_interactions"] = row.get("interactions_done", 0)
        done = row.get("interactions_done") or row.get("train_interactions") or 0
        if done:
            row["ms_per_interaction"] = round(1000 * float(row["wall_seconds"]) / float(done), 3)
        return row


def _status_kb(pid: int, field: str) -> int:
    """A memory figure of the process in kB (``VmHWM``: peak resident set, ``VmRSS``: current),
    0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _last_step(err_chunks: list[bytes]) -> StepReport | None:
    """The newest ``STEP`` report among the child's stderr lines read so far."""
    for chunk in reversed(err_chunks):
        report = step_report(chunk.decode(errors="replace"))
        if report is not None:
            return report
    return None


def _drain(stream: IO[bytes] | None, chunks: list[bytes]) -> threading.Thread:
    """Read a child's pipe line by line in a thread (so a chatty child never blocks on a full
    pipe, and progress lines are seen while the child runs)."""

    def run() -> None:
        if stream is not None:
            chunks.extend(stream)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def baseline_checkout(folder: Path) -> Path:
    """A git worktree of ``BASELINE_COMMIT`` in ``folder`` (removed by the caller)."""
    target = folder / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(target), BASELINE_COMMIT],
        check=True,
        capture_output=True,
    )
    shared = ROOT.parent / "shared"
    if shared.exists() and not (folder / "shared").exists():
        (folder / "shared").symlink_to(shared)
    # the baseline has no bench_scale.py: run this file against its code via PYTHONPATH
    return target


def print_row(label: str, row: dict[str, float | str]) -> None:
    print(
        f"{label:10s} {int(row['agents']):>9,} agents  {row.get('status', '')[:40]:40s} "
        f"wall {float(row.get('wall_seconds', 0)):8.1f} s  "
        f"{float(row.get('ms_per_interaction', 0)):7.3f} ms/inter  "
        f"(init+step 0 {float(row.get('until_step0_seconds', 0)):7.1f} s, then "
        f"{float(row.get('steps_ms_per_interaction', 0)):7.3f} ms/inter)  "
        f"peak {float(row.get('peak_rss_mb', 0)):8.1f} MB  "
        f"trace {float(row.get('trace_mb', 0)):8.1f} MB"
        f"  msg rows {int(row.get('message_rows', 0)):>10,}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=DEFAULT_SIZES)
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=DEFAULT_BASELINE_SIZES)
    parser.add_argument(
        "--timeout", type=float, default=10_800.0, help="seconds per size (1M: ~100 min)"
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=0.0,
        help="stop a size whose resident memory passes this many GB and report how far it got "
        "(0: no cap); e.g. 19 on a 24 GB machine",
    )
    parser.add_argument(
        "--progress",
        type=float,
        default=60.0,
        help="seconds between progress lines on stderr while a size runs (0: none)",
    )
    parser.add_argument("--smoke", action="store_true", help="300 agents only, no baseline")
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--trace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override for this checkout's runs (not the baseline's, which may not know "
        "the option), e.g. --set propagation.max_memberships=4",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "experiments" / "results" / "bench_scale.json"
    )
    args = parser.parse_args()
    if args.single is not None:
        print(json.dumps(run_one(args.single, args.trace, args.overrides)))
        return
    cap_mb = args.max_rss_gb * 1024
    sizes = [300] if args.smoke else sorted(args.sizes)
    baseline_sizes = [] if args.smoke else sorted(args.baseline_sizes)
    rows: dict[str, list[dict[str, float | str]]] = {"baseline": [], "now": []}
    with tempfile.TemporaryDirectory() as folder:
        if baseline_sizes:
            code = baseline_checkout(Path(folder))
            try:
                for agents in baseline_sizes:
                    row = measure(code, agents, args.timeout, (), cap_mb, args.progress)
                    rows["baseline"].append(row)
                    print_row(f"{BASELINE_COMMIT}", row)
            finally:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(code)],
                    capture_output=True,
                )
        for agents in sizes:
            row = measure(ROOT, agents, args.timeout, args.overrides, cap_mb, args.progress)
            rows["now"].append(row)
            print_row("now", row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"smoke": args.smoke, "overrides": args.overrides, "rows": rows}, indent=2)
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
