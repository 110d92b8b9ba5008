"""monodir's speed and memory, all measured in one run on this machine.

Run from the repository root::

    python benchmarks/bench_core.py              # 64^3, 128^3, 256^3 + Xmipp reference cases
    python benchmarks/bench_core.py --quick      # 64^3 and 128^3, no reference cases
    python benchmarks/bench_core.py --sizes 384  # other sizes (memory permitting)

Tables printed:

1. Per (direction, frequency) step, default and ``xmipp_compat`` mode, one process with
   ``--threads`` FFT threads (default 1, as a pipeline worker runs):

   * ``dense floor``: the bare transforms a step needs when computed the textbook way, with
     the same library (pyFFTW, FFTW_ESTIMATE plans as monodir uses), precision and threads:
     two complex inverse 3D FFTs (the four real inverse transforms packed in pairs) plus the
     real forward and inverse 3D FFTs of the amplitude low-pass. Xmipp does six real ones.
   * ``step``: monodir's time per step, averaged over a whole direction (the direction's
     set-up included; of three directions timed one by one, the one with the median time
     per step), and its ratio to the dense floor;
   * ``fft in step``: the time spent inside FFT executions during that direction (monodir
     prunes its transforms, see ``monodir.core.monogenic.ShellSweep``), and the ratio
     ``step / fft in step`` (everything that is not a transform);
   * MonoRes time, whole ``monodir.directional`` time (``--jobs`` forked processes, or
     threads where forking is unsafe), and the peak
     resident memory of a worker process while it computes directions (imports, setup and
     workspace included) and of one running MonoRes (imports, map and mask included), and,
     from 256^3 on, of the largest worker and the client of a whole ``monodir run`` (46
     directions; every task a worker ran), also in volumes of ``n^3`` float32.
2. Growth with the box size: time per step over ``n^3 log2 n`` relative to the smallest size.
3. Xmipp reference cases (``../shared/data/xmipp_reference``): MonoRes and whole directional
   analysis (``--jobs`` processes, 1 FFT thread each, i.e. the same two cores; the median of
   ``--repeat`` runs, default 3, timed in rounds over all the cases, with the fastest and
   slowest), and a whole ``monodir run``
   on the local Dask cluster, against the wall times Xmipp's own binaries took on this
   machine kind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monodir.core import fourier  # noqa: E402
from monodir.core.directional import (  # noqa: E402
    _use_processes,
    direction_resolution,
    directional,
    prepare_directional,
)
from monodir.core.monogenic import AmplitudeWorkspace  # noqa: E402
from monodir.core.monores import monores  # noqa: E402
from monodir.synthetic import anisotropic_map  # noqa: E402

REF = ROOT.parent / "shared" / "data" / "xmipp_reference"
XMIPP_WALL = {  # MonoDir wall seconds from ../shared/data/xmipp_reference/README.md
    ("emd3488", False): 96.0,
    ("emd3488", True): 51.2,
    ("betagal", False): 59.3,
    ("betagal", True): 48.1,
    ("synth128", False): 106.2,
}
XMIPP_MONORES_WALL = {"emd3488": 2.0, "betagal": 2.4, "synth128": 3.6}
VOXEL = {"emd3488": 1.05, "betagal": 3.54, "synth128": 1.0}


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def dense_floor(n: int, dtype, threads: int) -> float:
    """Bare dense transforms of one step: 2 complex inverse + 1 real forward + 1 real inverse."""
    shape = (n, n, n)
    inv = fourier.InverseC2C(shape, fourier.complex_dtype(dtype), threads)
    lp = fourier.RealFilter(shape, np.dtype(dtype), threads)
    rng = np.random.default_rng(0)
    inv.zin[...] = rng.standard_normal(shape)
    lp.x[...] = rng.standard_normal(shape)
    one = np.ones(1, dtype=dtype)

    def step():
        inv.run()
        inv.run()
        lp.run(one)

    step()
    return best_of(step, 5)


_RSS_CODE = """
import sys, resource, numpy as np
sys.path.insert(0, {root!r})
from monodir.core.directional import prepare_directional, direction_resolution
from monodir.core.monogenic import workspace_for
from monodir.pipeline.graph import tune_worker_malloc
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024.0
imports_rss = rss()
d = np.load({path!r}); v, m = d["v"], d["m"]; del d
s = prepare_directional(v, m, 1.0, xmipp_compat={compat!r}, threads={threads})
del v, m
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024.0
setup_rss = hwm()
open("/proc/self/clear_refs", "w").write("5")
tune_worker_malloc()  # as the worker's first cone task does
ws = workspace_for(s.shape, s.dtype, {threads})
for i in (3, 40):
    direction_resolution(s, i, {threads}, workspace=ws)
print(imports_rss, setup_rss, hwm())
"""


_MONORES_RSS_CODE = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from monodir.core.monores import monores
from monodir.pipeline.graph import tune_worker_malloc
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
imports_rss = status("VmRSS")
d = np.load({path!r}); inputs = {{"v": d["v"], "m": d["m"]}}; del d
inputs_rss = status("VmRSS")
tune_worker_malloc()  # as the worker's MonoRes task does
# the map is handed over as the task does: MonoRes frees it once its spectrum is taken
monores(inputs.pop("v"), inputs["m"], 1.0, xmipp_compat={compat!r}, threads={threads})
print(imports_rss, inputs_rss, status("VmHWM"))
"""


def monores_peak_rss(vol, mask, compat: bool, threads: int) -> tuple[float, float, float]:
    """RSS (MiB) of a fresh worker-like process running MonoRes: after its imports, with the
    map and mask loaded (the MonoRes task holds them throughout), and its peak."""
    return _worker_like(_MONORES_RSS_CODE, vol, mask, compat, threads)


def _worker_like(code: str, vol, mask, compat: bool, threads: int) -> tuple[float, float, float]:
    """Run ``code`` (a template of the map file, mode and threads) in a fresh process with a
    Dask worker's environment; the three numbers it prints last."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "map.npz")
        np.savez(path, v=vol, m=mask)
        script = code.format(root=str(ROOT), path=path, compat=compat, threads=threads)
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env=worker_environ(),
        )
    a, b, c = out.stdout.split()[-3:]
    return float(a), float(b), float(c)


def worker_environ() -> dict[str, str]:
    """The environment a Dask nanny gives its worker processes (malloc trimming, 1 BLAS thread)."""
    import dask
    import distributed  # noqa: F401  (registers the distributed config defaults)

    extra = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return {**os.environ, **{k: str(v) for k, v in extra.items()}}


def worker_peak_rss(vol, mask, compat: bool, threads: int) -> tuple[float, float, float]:
    """RSS (MiB) of a fresh worker-like process: after its imports, peak up to the end of
    prepare, and peak while it computes two directions (imports, setup and workspace
    included)."""
    return _worker_like(_RSS_CODE, vol, mask, compat, threads)


def kernel_rows(
    sizes: list[int], threads: int, jobs: int, whole_upto: int, run_peak_from: int = 256
) -> list[dict]:
    rows = []
    for n in sizes:
        vol, mask = anisotropic_map(n, 1.0, noise=0.1, seed=0)
        for compat in (False, True):
            dtype = np.float64 if compat else np.float32
            setup = prepare_directional(vol, mask, 1.0, xmipp_compat=compat, threads=threads)
            ws = AmplitudeWorkspace(setup.shape, setup.dtype, threads)
            direction_resolution(setup, 0, threads, workspace=ws)  # plans, buffers
            # three directions, each timed on its own: the one with the median time per step
            # is reported (a single direction at 64^3 lasts ~40 ms, within the machine's noise)
            timed = []
            for i in (3, 4, 5):
                log: list = []
                fourier.fft_clock = [0.0]
                t0 = time.perf_counter()
                direction_resolution(setup, i, threads, workspace=ws, sweep_log=log)
                timed.append((time.perf_counter() - t0, fourier.fft_clock[0], len(log)))
                fourier.fft_clock = None
            t_dir, t_fft, steps = sorted(timed, key=lambda t: t[0] / t[2])[1]
            floor = dense_floor(n, dtype, threads)
            t0 = time.perf_counter()
            monores(vol, mask, 1.0, xmipp_compat=compat, threads=threads)
            t_mr = time.perf_counter() - t0
            t_whole = float("nan")
            if n <= whole_upto:
                t0 = time.perf_counter()
                directional(vol, mask, 1.0, xmipp_compat=compat, threads=threads, n_jobs=jobs)
                t_whole = time.perf_counter() - t0
            rss_imports, rss_setup, rss_dirs = worker_peak_rss(vol, mask, compat, threads)
            _, mr_inputs, mr_peak = monores_peak_rss(vol, mask, compat, threads)
            run_peaks = {"worker_peak_MiB": float("nan"), "client_peak_MiB": float("nan")}
            if n >= run_peak_from and not compat:
                run_peaks = synthetic_run_peaks(vol, mask, jobs)
            vol_mib = n**3 * 4 / 2**20
            row = {
                "n": n,
                "mode": "compat" if compat else "default",
                "dense_floor_ms": floor * 1e3,
                "step_ms": t_dir / steps * 1e3,
                "step/dense_floor": t_dir / steps / floor,
                "fft_in_step_ms": t_fft / steps * 1e3,
                "step/fft_in_step": t_dir / t_fft,
                "steps": steps,
                "direction_s": t_dir,
                "monores_s": t_mr,
                f"directional_{setup.n_directions}dirs_s": t_whole,
                "worker_peak_MiB": rss_dirs,
                "worker_peak_volumes": rss_dirs / vol_mib,
                "peak_minus_imports_volumes": (rss_dirs - rss_imports) / vol_mib,
                "imports_MiB": rss_imports,
                "monores_peak_MiB": mr_peak,
                "monores_peak_volumes": mr_peak / vol_mib,
                "monores_peak_minus_imports_inputs_volumes": (mr_peak - mr_inputs) / vol_mib,
                "run_worker_peak_volumes": run_peaks["worker_peak_MiB"] / vol_mib,
                "run_client_peak_volumes": run_peaks["client_peak_MiB"] / vol_mib,
                "prepare_peak_MiB": rss_setup,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def _run_config(case: str, fast: bool, compat: bool, out: Path, workers: int) -> Path:
    import yaml

    base = REF / case
    cfg = {
        "input": {
            "map": str(base / "map.mrc"),
            "mask": str(base / "mask.mrc"),
            "voxel_size": VOXEL[case],
        },
        "directional": {"fast": fast},
        "output": {"directory": str(out)},
        "cluster": {"kind": "local", "n_workers": workers, "threads_per_worker": 1},
        "run": {"threads": 1},
        "xmipp_compat": compat,
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def synthetic_run_peaks(vol, mask, workers: int) -> dict:
    """Peak memory of a whole ``monodir run`` on a synthetic map (46 directions, local
    cluster): the largest worker process (every task it ran) and the client, MiB."""
    import mrcfile
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_pipeline import run_one

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in (("map", vol), ("mask", mask)):
            paths[name] = str(Path(tmp) / f"{name}.mrc")
            with mrcfile.new(paths[name]) as fh:
                fh.set_data(np.asarray(data, dtype=np.float32))
                fh.voxel_size = 1.0
        cfg = {
            "input": {"map": paths["map"], "mask": paths["mask"], "voxel_size": 1.0},
            "directional": {"fast": True},
            "output": {"directory": str(Path(tmp) / "run")},
            "cluster": {"kind": "local", "n_workers": workers, "threads_per_worker": 1},
            "run": {"threads": 1},
        }
        path = Path(tmp) / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return run_one("synthetic", path)


def whole_run(case: str, fast: bool, compat: bool, workers: int) -> float:
    """Wall time of ``python -m monodir run`` (cluster start, I/O and reports included)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_pipeline import run_one

    with tempfile.TemporaryDirectory() as tmp:
        cfg = _run_config(case, fast, compat, Path(tmp) / "run", workers)
        return run_one(case, cfg)["wall"]


def reference_rows(jobs: int, runs: bool, repeat: int = 3) -> list[dict]:
    import mrcfile

    cases = []
    for (case, fast), xm in XMIPP_WALL.items():
        base = REF / case
        if not base.exists():
            continue
        vol = mrcfile.read(base / "map.mrc").astype(np.float32)
        mask = mrcfile.read(base / "mask.mrc") > 0.5
        s = VOXEL[case]
        for compat in (False, True):
            t0 = time.perf_counter()
            mr = monores(vol, mask, s, xmipp_compat=compat, threads=jobs)
            t_mr = time.perf_counter() - t0
            cases.append((case, fast, compat, xm, vol, mask, s, mr.resolution, t_mr))
    # forked processes unless this process runs another thread (then threads)
    parallel = "processes" if _use_processes("auto") else "threads"
    # the machine's noise (5-10 % between runs, in slow and fast spells of minutes) is as
    # large as some margins: every analysis is timed `repeat` times, in rounds over all the
    # cases (a slow spell then falls on one run of several cases, not on every run of one),
    # and the median is compared with Xmipp
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(max(1, repeat)):
        for k, (_, fast, compat, _, vol, mask, s, mr_res, _) in enumerate(cases):
            t0 = time.perf_counter()
            directional(
                vol,
                mask,
                s,
                fast=fast,
                xmipp_compat=compat,
                monores_map=mr_res,
                threads=1,
                n_jobs=jobs,
            )
            times[k].append(time.perf_counter() - t0)
    rows = []
    for (case, fast, compat, xm, *_, t_mr), ts in zip(cases, times, strict=True):
        t_dir = float(np.median(ts))
        t_run = whole_run(case, fast, compat, jobs) if runs else float("nan")
        xm_total = xm + XMIPP_MONORES_WALL[case]
        row = {
            "case": case,
            "directions": 46 if fast else 81,
            "mode": "compat" if compat else "default",
            "parallel": parallel,
            "monores_s": t_mr,
            "directional_s": t_dir,
            "directional_min_s": min(ts),
            "directional_max_s": max(ts),
            "xmipp_monodir_s": xm,
            "xmipp/monodir directional": xm / t_dir,
            "xmipp/monodir both": xm_total / (t_mr + t_dir),
            "monodir_run_s": t_run,
            "xmipp/monodir run": xm_total / t_run,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], keys: list[str] | None = None) -> str:
    keys = keys or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def growth_rows(rows: list[dict]) -> list[dict]:
    out = []
    for mode in ("default", "compat"):
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        n0 = sel[0]["n"]
        t0 = sel[0]["step_ms"] / (n0**3 * math.log2(n0))
        v0 = sel[0]["worker_peak_MiB"]
        for r in sel:
            n = r["n"]
            out.append(
                {
                    "mode": mode,
                    "n": n,
                    "step_ms": r["step_ms"],
                    "step / (n^3 log2 n), rel.": r["step_ms"] / (n**3 * math.log2(n)) / t0,
                    "worker_peak_MiB": r["worker_peak_MiB"],
                    "peak / peak(smallest)": r["worker_peak_MiB"] / v0,
                    "volumes (n^3 float32)": r["worker_peak_volumes"],
                    "volumes without imports": r["peak_minus_imports_volumes"],
                    "MonoRes peak, volumes": r["monores_peak_volumes"],
                }
            )
    return out


def target_rows(rows: list[dict], ref: list[dict]) -> list[dict]:
    """The targets of issue 5, each with what this run measured and whether it is met."""

    def fmt(values: list[float]) -> str:
        return ", ".join(f"{v:.3g}" for v in values) if values else "n/a"

    out = []
    steps = {r["n"]: r["step/dense_floor"] for r in rows if r["mode"] == "default"}
    required = [v for n, v in steps.items() if n >= 128]
    out.append(
        {
            "target": "step <= 1.3 x dense floor (default; 128^3 and up)",
            "measured": ", ".join(f"{n}^3: {v:.2f}" for n, v in sorted(steps.items())),
            "met": "n/a" if not required else ("yes" if max(required) <= 1.3 else "no"),
        }
    )
    for mode, need in (("default", 10.0), ("compat", 3.0)):
        sel = [r for r in ref if r["mode"] == mode]
        for key, what in (("xmipp/monodir directional", "analysis"), ("xmipp/monodir run", "run")):
            vals = [r[key] for r in sel if not math.isnan(r[key])]
            out.append(
                {
                    "target": f"{mode} >= {need:g}x Xmipp ({what})",
                    "measured": fmt(vals),
                    "met": "n/a" if not vals else ("yes" if min(vals) >= need else "no"),
                }
            )
    for key, what in (
        ("worker_peak_volumes", "direction tasks"),
        ("monores_peak_volumes", "MonoRes task, map and mask included"),
        ("run_worker_peak_volumes", "largest worker of a whole `monodir run`, every task"),
    ):
        peak = [
            r[key]
            for r in rows
            if r["mode"] == "default" and r["n"] == 256 and not math.isnan(r[key])
        ]
        out.append(
            {
                "target": f"worker peak at 256^3 <= 12 volumes ({what}; imports included)",
                "measured": fmt(peak),
                "met": "n/a" if not peak else ("yes" if peak[0] <= 12.0 else "no"),
            }
        )
    return out


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64^3 and 128^3, no reference cases")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=1, help="FFT threads per process")
    ap.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="threads sharing the directions"
    )
    ap.add_argument(
        "--whole-upto", type=int, default=128, help="time all directions up to this size"
    )
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-runs", action="store_true", help="skip the whole `monodir run`s")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed analyses per reference case (the median is compared with Xmipp)",
    )
    args = ap.parse_args(argv)
    sizes = args.sizes or ([64, 128] if args.quick else [64, 128, 256])
    print(f"# monodir benchmark: {os.cpu_count()} CPUs, FFT threads per process {args.threads}")
    print(f"# load average at start: {load_average()}")
    rows = kernel_rows(
        sizes, args.threads, args.jobs, args.whole_upto, 10**9 if args.no_runs else 256
    )
    print("\n## Per step, per direction, whole analysis, memory\n")
    print(table(rows))
    print("\n## Growth with the box size\n")
    print(table(growth_rows(rows)))
    ref: list[dict] = []
    if not args.quick and not args.no_reference and REF.exists():
        ref = reference_rows(args.jobs, runs=not args.no_runs, repeat=args.repeat)
        print(
            f"\n## Against Xmipp's wall time on the same inputs ({args.jobs} processes "
            f"x 1 FFT thread; analysis: median of {max(1, args.repeat)} runs timed in rounds "
            "over the cases, with the fastest and slowest; `monodir run`: one run on a local "
            "Dask cluster, same workers)\n"
        )
        print(table(ref))
    print("\n## Targets (issue 5), from the figures above\n")
    print(table(target_rows(rows, ref)))
    print(f"\n# load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
