"""The Ray executor: a synthetic run on a local Ray instance (started here) gives the same
metrics and trace rows as the in-process executor; bad executor settings are one clear error."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from typer.testing import CliRunner

import recnet.brain.factory as factory
from recnet.cli.app import app
from recnet.config import load_scenario
from recnet.config.executor_settings import ExecutorSettings
from recnet.exec.base import Executor, LocalExecutor, build_executor, split
from recnet.exec.ray_executor import RayExecutor
from recnet.runner import simulate

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "scenarios" / "synthetic.yaml"
TINY = [
    "dataset.synthetic.n_users=60",
    "dataset.synthetic.n_items=120",
    "dataset.synthetic.n_communities=4",
    "dataset.synthetic.n_drifts=2",
    "dataset.synthetic.interactions_per_user=8",
    "world.n_routers=4",
    "propagation.update_size=15",
    "trace.messages=all",
]
#: Tables compared (run ids, row ids and timestamps left out, as in test_reference_trace).
TABLES = ("metrics", "messages", "profile_versions", "predictions", "interactions", "prequential")
VOLATILE = {"run_id", "id", "created_at", "started_at", "finished_at"}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance for this module; the executor joins it (address unset)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def table_rows(path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(path)
    out: dict[str, list[str]] = {}
    for table in TABLES:
        cursor = db.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        keep = [i for i, name in enumerate(names) if name not in VOLATILE]
        out[table] = sorted(repr(tuple(row[i] for i in keep)) for row in cursor.fetchall())
    db.close()
    return out


def run(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, *extra: str):
    """Run the tiny scenario; return (trace rows per table, the executor the brain used)."""
    built: list[Executor] = []

    def recording(settings: ExecutorSettings) -> Executor:
        built.append(build_executor(settings))
        return built[-1]

    monkeypatch.setattr(factory, "build_executor", recording)
    scenario = load_scenario(SYNTHETIC, [*TINY, *extra])
    result = asyncio.run(simulate(scenario, trace_path=tmp_path / f"{name}.sqlite"))
    return table_rows(result.trace_path), built[0]


def test_a_ray_run_writes_the_same_trace_as_a_local_run(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_rows, local = run(tmp_path, "local", monkeypatch)
    ray_rows, remote = run(
        tmp_path, "ray", monkeypatch, "executor.kind=ray", "executor.min_items=1"
    )
    assert isinstance(local, LocalExecutor)
    assert isinstance(remote, RayExecutor)
    assert remote.remote_tasks > 0  # merges really ran as Ray tasks
    assert ray.is_initialized()  # it joined the test's instance and left it running
    assert local_rows["messages"] and local_rows["profile_versions"]  # something to compare
    for table in TABLES:
        digests = [
            hashlib.sha256("\n".join(r[table]).encode()).hexdigest() for r in (local_rows, ray_rows)
        ]
        assert digests[0] == digests[1], f"{table}: Ray rows differ from local rows"


def test_split_keeps_order_and_balances_chunks() -> None:
    items = list(range(10))
    chunks = split(items, 3)
    assert chunks == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert split(items[:2], 8) == [[0], [1]]


def error_line(args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["simulate", str(SYNTHETIC), *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_unknown_executor_kind_is_one_error_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    line = error_line(["--set", "executor.kind=dask"], monkeypatch, tmp_path)
    assert line.startswith("error: ")
    assert "executor.kind" in line
    assert "'local' or 'ray'" in line  # the fix: the kinds there are


def test_ray_without_the_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    line = error_line(["--set", "executor.kind=ray", *TINY_SET], monkeypatch, tmp_path)
    assert line.startswith("error: executor.kind: ray needs the ray package")
    assert "pip install -e '.[ray]'" in line


TINY_SET = [arg for override in TINY for arg in ("--set", override)]
