"""Kernel benchmark: monodir's per-step and per-direction cost against the FFT floor.

Run from the repository root::

    python benchmarks/bench_core.py            # 64^3, 128^3, 256^3 + Xmipp reference cases
    python benchmarks/bench_core.py --quick    # 64^3 and 128^3 only, no reference cases

Everything is measured in this one run on this machine. The FFT floor of one
(direction, frequency) step is the time of the bare transforms the step needs, with the same
library (pyFFTW), precision and thread count: two complex inverse FFTs (the four real inverse
transforms packed in pairs) plus one real forward and one real inverse FFT (the amplitude's
low-pass). Peak memory is measured in a fresh subprocess that computes one direction.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monodir.core import fourier  # noqa: E402
from monodir.core.directional import (  # noqa: E402
    cone_basis,
    direction_resolution,
    prepare_directional,
    resolution_matrix,
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


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def fft_floor(n: int, dtype, threads: int) -> float:
    """Bare transforms of one step: 2 complex inverse + 1 real forward + 1 real inverse."""
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


def peak_rss_one_direction(n: int, threads: int, compat: bool) -> float:
    """Peak RSS (MiB) of a fresh process that prepares and computes one direction."""
    code = (
        f"import sys, resource; sys.path.insert(0, {str(ROOT)!r})\n"
        "from monodir.synthetic import anisotropic_map\n"
        "from monodir.core.directional import prepare_directional, direction_resolution\n"
        f"v, m = anisotropic_map({n}, 1.0, noise=0.1, seed=0)\n"
        f"s = prepare_directional(v, m, 1.0, xmipp_compat={compat!r}, threads={threads})\n"
        f"direction_resolution(s, 3, {threads})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def kernel_rows(sizes: list[int], threads: int) -> list[dict]:
    rows = []
    for n in sizes:
        vol, mask = anisotropic_map(n, 1.0, noise=0.1, seed=0)
        for compat in (False, True):
            dtype = np.float64 if compat else np.float32
            setup = prepare_directional(vol, mask, 1.0, xmipp_compat=compat, threads=threads)
            ws = AmplitudeWorkspace(setup.shape, setup.dtype, threads)
            basis = cone_basis(setup, 3)
            st = setup.steps[len(setup.steps) // 2]

            def amp(basis=basis, st=st, ws=ws, setup=setup):
                ws.amplitude(
                    basis,
                    st.freq,
                    st.freq_high_pass,
                    st.freq_low_pass,
                    taper=setup.taper,
                    scratch=True,
                )

            amp()
            t_step = best_of(amp, 5)
            floor = fft_floor(n, dtype, threads)
            log: list = []
            direction_resolution(setup, 3, threads, workspace=ws)
            t_dir = best_of(
                lambda setup=setup, ws=ws, log=log: direction_resolution(
                    setup, 3, threads, workspace=ws, sweep_log=log
                ),
                1,
            )
            n_steps = len(log)
            t0 = time.perf_counter()
            monores(vol, mask, 1.0, xmipp_compat=compat, threads=threads)
            t_mr = time.perf_counter() - t0
            rows.append(
                {
                    "n": n,
                    "mode": "compat" if compat else "default",
                    "threads": threads,
                    "fft_floor_step_s": floor,
                    "step_s": t_step,
                    "step_over_floor": t_step / floor,
                    "direction_s": t_dir,
                    "steps_in_direction": n_steps,
                    "direction_over_floor": t_dir / (n_steps * floor),
                    "monores_s": t_mr,
                    "directional_81_est_s": t_dir * setup.n_directions,
                    "peak_rss_one_direction_MiB": peak_rss_one_direction(n, threads, compat),
                    "volume_MiB": n**3 * 4 / 2**20,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def reference_rows(threads: int, n_jobs: int) -> list[dict]:
    import mrcfile

    rows = []
    cases = {"emd3488": 1.05, "betagal": 3.54, "synth128": 1.0}
    for case, s in cases.items():
        base = REF / case
        if not base.exists():
            continue
        vol = mrcfile.read(base / "map.mrc").astype(np.float64)
        mask = mrcfile.read(base / "mask.mrc") > 0.5
        for fast in (False, True):
            if (case, fast) not in XMIPP_WALL:
                continue
            for compat in (False, True):
                t0 = time.perf_counter()
                monores(vol, mask, s, xmipp_compat=compat, threads=threads * n_jobs)
                t_mr = time.perf_counter() - t0
                t0 = time.perf_counter()
                setup = prepare_directional(
                    vol, mask, s, fast=fast, xmipp_compat=compat, threads=threads
                )
                resolution_matrix(setup, threads=threads, n_jobs=n_jobs)
                t_dir = time.perf_counter() - t0
                xm = XMIPP_WALL[(case, fast)]
                rows.append(
                    {
                        "case": case,
                        "fast": fast,
                        "mode": "compat" if compat else "default",
                        "monores_s": t_mr,
                        "directional_s": t_dir,
                        "xmipp_monodir_s": xm,
                        "xmipp_over_monodir": xm / t_dir,
                        "xmipp_total_over_monodir_total": (xm + XMIPP_MONORES_WALL[case])
                        / (t_dir + t_mr),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict], keys: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(fmt(r[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64^3 and 128^3 only")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([64, 128] if args.quick else [64, 128, 256])
    fourier.set_planner_effort("FFTW_MEASURE")
    print(f"# monodir kernel benchmark, {os.cpu_count()} CPUs, FFTW_MEASURE plans")
    rows = kernel_rows(sizes, args.threads)
    print("\n## Per step and per direction versus the FFT floor\n")
    print(
        table(
            rows,
            [
                "n",
                "mode",
                "threads",
                "fft_floor_step_s",
                "step_s",
                "step_over_floor",
                "direction_s",
                "steps_in_direction",
                "direction_over_floor",
                "monores_s",
                "directional_81_est_s",
                "peak_rss_one_direction_MiB",
                "volume_MiB",
            ],
        )
    )
    if not args.quick and not args.no_reference and REF.exists():
        ref = reference_rows(threads=1, n_jobs=args.threads)
        print("\n## Against Xmipp's wall time on the same inputs (2 local processes)\n")
        print(
            table(
                ref,
                [
                    "case",
                    "fast",
                    "mode",
                    "monores_s",
                    "directional_s",
                    "xmipp_monodir_s",
                    "xmipp_over_monodir",
                    "xmipp_total_over_monodir_total",
                ],
            )
        )
    print(
        f"\n# max RSS of this process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
