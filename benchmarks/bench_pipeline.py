"""Wall times of ``monodir run`` on a synthetic map: 1 and 2 local workers, and local SLURM.

Usage::

    python benchmarks/bench_pipeline.py                 # 128^3, 81 directions
    python benchmarks/bench_pipeline.py --size 96 --fast --no-slurm

Each configuration runs as a separate ``python -m monodir run`` process (so cluster start-up
is included, as a user sees it). The table gives the total wall time and the per-stage times
recorded in the run store; the last column says whether the output maps are bit-identical to
those of the first configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monodir.io.mrc import read_map, write_map  # noqa: E402
from monodir.pipeline.runner import MRC_OUTPUTS  # noqa: E402

STAGES = ("cluster_start", "monores", "prepare", "directions", "reduce", "export")


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = proc.stdout.split()
    return proc.returncode == 0 and any(
        s.rstrip("~#!%$@^-+") in ("idle", "mixed", "allocated") for s in states
    )


def make_data(directory: Path, size: int, voxel_size: float) -> dict[str, str]:
    """Write a synthetic anisotropic map and its mask."""
    from monodir import synthetic

    directory.mkdir(parents=True, exist_ok=True)
    volume, mask = synthetic.anisotropic_map(size, voxel_size=voxel_size, seed=0)
    write_map(directory / "map.mrc", volume, voxel_size=voxel_size, overwrite=True)
    write_map(
        directory / "mask.mrc", mask.astype(np.float32), voxel_size=voxel_size, overwrite=True
    )
    return {"map": str(directory / "map.mrc"), "mask": str(directory / "mask.mrc")}


def write_config(path: Path, inputs: dict[str, str], out: Path, cluster: dict, fast: bool) -> Path:
    data = {
        "input": inputs,
        "directional": {"fast": fast},
        "output": {"directory": str(out)},
        "cluster": {"dashboard": ":0", **cluster},
        "run": {"threads": 1},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def _high_water_mib(pid: int) -> float | None:
    """Peak resident memory (``VmHWM``) of a live process, MiB."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_one(name: str, config: Path) -> dict:
    """Run ``python -m monodir run config``; wall time, stage timings and peak memory.

    The peaks are each process's own high-water mark (``VmHWM``), read every 0.1 s while
    it lives: ``client_peak_MiB`` for the ``monodir`` process, ``worker_peak_MiB`` for the
    largest of its child processes (the local cluster's workers, every task included).
    """
    import psutil

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monodir", "-q", "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peaks: dict[int, float] = {}
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            pids = [proc.pid] + [c.pid for c in parent.children(recursive=True)]
        except psutil.Error:
            pids = [proc.pid]
        for pid in pids:
            hwm = _high_water_mib(pid)
            if hwm is not None:
                peaks[pid] = max(hwm, peaks.get(pid, 0.0))
        time.sleep(0.1)
    _, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    load = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{stderr}")
    out = Path(yaml.safe_load(config.read_text())["output"]["directory"])
    # the store's attributes read as the JSON they are: opening the store with zarr would
    # leave zarr's I/O thread running in this process, and directional(n_jobs>1) in a
    # process with another thread uses threads instead of forked processes
    timings = json.loads((out / "run.zarr" / "zarr.json").read_text())["attributes"]["timings"]
    children = [v for pid, v in peaks.items() if pid != proc.pid]
    return {
        "name": name,
        "wall": wall,
        "timings": timings,
        "out": out,
        "load": load,
        "client_peak_MiB": peaks.get(proc.pid, float("nan")),
        "worker_peak_MiB": max(children) if children else float("nan"),
    }


def same_outputs(a: Path, b: Path) -> bool:
    for name in MRC_OUTPUTS:
        if not np.array_equal(read_map(a / name).data, read_map(b / name).data):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="box edge (default 128)")
    parser.add_argument("--voxel-size", type=float, default=1.0)
    parser.add_argument("--fast", action="store_true", help="46 directions instead of 81")
    parser.add_argument("--no-slurm", action="store_true", help="skip the SLURM run")
    parser.add_argument("--slurm-jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work here and keep the runs")
    args = parser.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="monodir-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        inputs = make_data(work / "data", args.size, args.voxel_size)
        configs = [
            ("local, 1 worker", {"kind": "local", "n_workers": 1, "threads_per_worker": 1}),
            ("local, 2 workers", {"kind": "local", "n_workers": 2, "threads_per_worker": 1}),
        ]
        if not args.no_slurm:
            if _slurm_up():
                configs.append(
                    (
                        f"SLURM, {args.slurm_jobs} x 1-core jobs",
                        {
                            "kind": "slurm",
                            "cores": 1,
                            "processes": 1,
                            "memory": "4GiB",
                            "walltime": "00:30:00",
                            "queue": "debug",
                            "jobs": args.slurm_jobs,
                            "log_directory": str(work / "slurm-logs"),
                        },
                    )
                )
            else:
                print("SLURM not reachable: skipping the SLURM run", file=sys.stderr)
        results = []
        for i, (name, cluster) in enumerate(configs):
            out = work / f"run{i}"
            if out.exists():
                shutil.rmtree(out)
            cfg = write_config(work / f"run{i}.yaml", inputs, out, cluster, args.fast)
            print(f"running: {name} ...", file=sys.stderr, flush=True)
            results.append(run_one(name, cfg))

        n_dir = 46 if args.fast else 81
        print(
            f"\nmonodir run, {args.size}^3 synthetic map, {n_dir} directions, "
            f"{os.cpu_count()} CPUs\n"
        )
        head = f"{'configuration':<26}{'wall s':>8}" + "".join(f"{s:>15}" for s in STAGES)
        print(head + f"{'identical':>11}{'load':>7}")
        print("-" * (len(head) + 18))
        for r in results:
            cells = "".join(f"{r['timings'].get(s, float('nan')):>15.2f}" for s in STAGES)
            same = "yes" if same_outputs(results[0]["out"], r["out"]) else "NO"
            print(f"{r['name']:<26}{r['wall']:>8.1f}{cells}{same:>11}{r['load']:>7.2f}")
        print("\nload: 1-minute load average at the end of the run (other processes included)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
