"""Benchmark: the same synthetic run with the in-process executor and with the Ray executor.

Pipeline position: outside the library; drives ``recnet.runner.simulate`` on the synthetic world
(the shape of ``experiments/bench_scale.py``) three times in this process: ``executor.kind:
local`` (the baseline), ``ray`` with its defaults (batches of at least ``min_items`` go to Ray)
and ``ray`` with ``min_items=1`` (every merge batch goes to Ray). The local Ray
instance is started once before the timed runs (its start-up is reported on its own).

For each variant it prints wall time, this process's CPU time and the CPU time of the Ray
processes (raylet, workers: every descendant of this process, read from /proc), the Ray tasks
sent, and whether the metrics equal the local run's. Figures and the load average go to
experiments/results/bench_ray.json.

    python experiments/bench_ray.py                 # 3,000 agents (users + items)
    python experiments/bench_ray.py --agents 1500   # another size
    python experiments/bench_ray.py --smoke         # 300 agents, seconds (plus Ray start-up)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.bench_scale import overrides_for  # noqa: E402

VARIANTS = {
    "local": ["executor.kind=local"],
    "ray": ["executor.kind=ray"],
    "ray-all": ["executor.kind=ray", "executor.min_items=1"],
}


def descendants_cpu(root: int) -> float:
    """CPU seconds (user + system) of every live descendant of process ``root``, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid in cpu:
        p = parent.get(pid)
        while p is not None and p > 1:
            if p == root:
                total += cpu[pid]
                break
            p = parent.get(p)
    return total


def run_variant(name: str, agents: int, folder: Path) -> dict[str, object]:
    import recnet.brain.factory as factory
    from recnet.config import load_scenario
    from recnet.exec.base import build_executor
    from recnet.runner import simulate

    built = []

    def recording(settings):  # the executor the brain gets, to read its task count
        built.append(build_executor(settings))
        return built[-1]

    factory.build_executor = recording
    scenario = load_scenario(
        ROOT / "scenarios" / "synthetic.yaml", [*overrides_for(agents), *VARIANTS[name]]
    )
    others_before = descendants_cpu(os.getpid())
    wall, cpu = time.perf_counter(), time.process_time()
    result = asyncio.run(simulate(scenario, trace_path=folder / f"{name}.sqlite"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    others = descendants_cpu(os.getpid()) - others_before
    return {
        "wall_seconds": round(wall, 2),
        "main_cpu_seconds": round(cpu, 2),
        "ray_processes_cpu_seconds": round(others, 2),
        "ray_tasks": getattr(built[0], "remote_tasks", 0),
        "train_interactions": result.n_train,
        "metrics": result.metrics["recnet"],
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=3_000)
    parser.add_argument("--smoke", action="store_true", help="300 agents")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args(argv)
    agents = 300 if args.smoke else args.agents

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - started
    print(f"Ray start-up (local, {args.num_cpus} CPUs): {startup:.2f} s wall")
    figures: dict[str, dict[str, object]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in VARIANTS:
                figures[name] = run_variant(name, agents, Path(tmp))
                f = figures[name]
                same = f["metrics"] == figures["local"]["metrics"]
                print(
                    f"{name:8s} wall {f['wall_seconds']:7.2f} s  main CPU "
                    f"{f['main_cpu_seconds']:7.2f} s  Ray processes CPU "
                    f"{f['ray_processes_cpu_seconds']:7.2f} s  tasks {f['ray_tasks']:6d}  "
                    f"metrics equal local: {same}"
                )
    finally:
        ray.shutdown()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min)")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_ray.json"
    report = {
        "agents": agents,
        "ray_startup_seconds": round(startup, 2),
        "num_cpus": args.num_cpus,
        "load_average": [round(x, 2) for x in load],
        "variants": figures,
    }
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"figures: {path}")
    return path


if __name__ == "__main__":
    main()
