"""End-to-end runs of the pipeline on a LocalCluster (tiny maps, fast mode).

Also holds the helpers the other pipeline tests import (``from test_pipeline_local import
...``): a tiny synthetic map writer and a fake kernel module, which lets the orchestration
be tested with controllable timing and without the numerics.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

REPORT_FILES = ("summary.json", "report.html", "colour_by_resolution.cxc")
OUTPUT_MAPS = (
    "monores_resolution.mrc",
    "monores_chimera.mrc",
    "radial_resolution.mrc",
    "azimuthal_resolution.mrc",
    "highest_resolution.mrc",
    "lowest_resolution.mrc",
    "doa.mrc",
    "mean_doa.mrc",
    "anisotropy.mrc",
    "zscore.mrc",
)

# ------------------------------------------------------------------------------------------
# helpers shared with the other pipeline tests
# ------------------------------------------------------------------------------------------


def _write_mrc(path: Path, data: np.ndarray, voxel_size: float, origin=(0.0, 0.0, 0.0)) -> None:
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, np.float32))
        mrc.voxel_size = voxel_size
        mrc.header.origin = origin
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = (0, 0, 0)


def make_inputs(
    directory: Path,
    n: int = 32,
    voxel_size: float = 2.0,
    *,
    seed: int = 0,
    half_maps: bool = False,
    origin=(10.0, -4.0, 2.5),
) -> dict[str, Path]:
    """Write a tiny synthetic map (blobs + noise, a little anisotropic) and its mask.

    Returns the paths: ``map`` (or ``half1``/``half2``) and ``mask``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float32) - n // 2
    vol = np.zeros((n, n, n), np.float32)
    for _ in range(12):
        c = rng.uniform(-n / 6, n / 6, 3)
        s = rng.uniform(1.0, 2.0)
        vol += np.exp(
            -(
                (z - c[0]) ** 2 / (2 * (1.6 * s) ** 2)
                + (y - c[1]) ** 2 / (2 * s**2)
                + (x - c[2]) ** 2 / (2 * s**2)
            )
        )
    r = np.sqrt(x**2 + y**2 + z**2)
    mask = (r <= n / 4).astype(np.float32)
    paths: dict[str, Path] = {}
    if half_maps:
        for k in (1, 2):
            noisy = vol + 0.05 * rng.standard_normal(vol.shape).astype(np.float32)
            paths[f"half{k}"] = directory / f"half{k}.mrc"
            _write_mrc(paths[f"half{k}"], noisy, voxel_size, origin)
    else:
        noisy = vol + 0.05 * rng.standard_normal(vol.shape).astype(np.float32)
        paths["map"] = directory / "map.mrc"
        _write_mrc(paths["map"], noisy, voxel_size, origin)
    paths["mask"] = directory / "mask.mrc"
    _write_mrc(paths["mask"], mask, voxel_size, origin)
    return paths


def write_config(
    path: Path,
    inputs: dict[str, Path],
    output: Path,
    *,
    n_workers: int = 1,
    extra: dict | None = None,
) -> Path:
    """Write a config for ``inputs`` (fast mode, local cluster, no fixed dashboard port)."""
    inp: dict = {"mask": str(inputs["mask"])}
    if "map" in inputs:
        inp["map"] = str(inputs["map"])
    else:
        inp["half_maps"] = [str(inputs["half1"]), str(inputs["half2"])]
    data = {
        "input": inp,
        "monores": {"low_resolution": 12.0, "step": 0.5},
        "directional": {"fast": True},
        "output": {"directory": str(output)},
        "cluster": {
            "kind": "local",
            "n_workers": n_workers,
            "threads_per_worker": 1,
            "dashboard": ":0",
        },
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    path.write_text(yaml.safe_dump(data))
    return path


FAKE_KERNELS = textwrap.dedent(
    '''
    """Fake kernels with the API of monodir.core (for orchestration tests)."""
    from __future__ import annotations

    import os
    import time
    from dataclasses import dataclass

    import numpy as np

    from monodir.core.results import DirectionalResult, MonoResResult

    MAP_NAMES = ("radial", "azimuthal", "highest", "lowest", "doa", "mean_doa",
                 "anisotropy", "zscore")


    @dataclass
    class FakeSetup:
        volume: np.ndarray
        mask_indices: np.ndarray
        directions: np.ndarray
        angles: np.ndarray
        voxel_size: float

        @property
        def n_directions(self):
            return len(self.directions)

        @property
        def n_mask(self):
            return len(self.mask_indices)

        @property
        def shape(self):
            return self.volume.shape


    def monores(volume, mask, voxel_size, *, half_map2=None, threads=1, **kw):
        res = np.where(mask, 5.0 + np.abs(volume), 0).astype(np.float32)
        return MonoResResult(resolution=res, chimera=res.copy(), refined_mask=mask.copy(),
                             resolutions=np.array([12.0, 8.0, 6.0]),
                             stats={"resolution": np.array([12.0, 8.0, 6.0])},
                             voxel_size=voxel_size, stop_reason="fake")


    def prepare_directional(volume, mask, voxel_size, *, fast=False, threads=1, **kw):
        d = 12 if fast else 20
        ang = np.stack([np.linspace(0, 180, d), np.linspace(0, 90, d)], 1)
        t, r = np.deg2rad(ang[:, 1]), np.deg2rad(ang[:, 0])
        dirs = np.stack([np.sin(t) * np.cos(r), np.sin(t) * np.sin(r), np.cos(t)], 1)
        idx = np.flatnonzero(mask.ravel())
        return FakeSetup(np.asarray(volume, np.float32), idx, dirs, ang, voxel_size)


    def direction_resolution(setup, i, threads=1):
        time.sleep(float(os.environ.get("FAKE_KERNEL_SLEEP", "0")))
        v = setup.volume.ravel()[setup.mask_indices]
        return (4.0 + (i + 1) * 0.1 + np.abs(v)).astype(np.float32)


    def voxel_summaries(setup, block, start):
        return {"start": start, "mean": block.mean(0), "max": block.max(0),
                "min": block.min(0), "sum": float(block.sum(dtype=np.float64))}


    def finalize_directional(setup, parts, monores_map=None):
        mean = np.concatenate([p["mean"] for p in parts])
        hi = np.concatenate([p["min"] for p in parts])
        lo = np.concatenate([p["max"] for p in parts])
        maps = {}
        for name, vals in zip(MAP_NAMES, (mean, mean, hi, lo, lo - hi, lo - hi,
                                           (lo - hi) / lo, mean - mean.mean())):
            vol = np.zeros(setup.shape, np.float32)
            vol.ravel()[setup.mask_indices] = vals
            maps[name] = vol
        d = setup.n_directions
        return DirectionalResult(
            directions=setup.directions, angles=setup.angles,
            mask_indices=setup.mask_indices,
            resolution_matrix=np.zeros((d, setup.n_mask), np.float32),
            maps=maps, thresholds={"radial_p90": float(np.percentile(mean, 90)),
                                   "azimuthal_p90": float(np.percentile(mean, 90))},
            radial_averages={"radius": np.arange(3.0), "radial_mean": np.ones(3)},
            preferred_directions={"rot": setup.angles[:, 0], "tilt": setup.angles[:, 1],
                                  "count": np.ones(d), "mean_resolution": np.ones(d)},
            direction_means=np.ones(d), anisotropy_axis=np.array([0.0, 0.0, 1.0]),
            axis_angle_to_z=0.0, voxel_size=setup.voxel_size,
            extra={"total": sum(p["sum"] for p in parts)},
        )
    '''
)


@pytest.fixture
def fake_kernels(tmp_path, monkeypatch) -> str:
    """Install the fake kernel module (importable by spawned workers) and return its name."""
    return install_fake_kernels(tmp_path, monkeypatch)


def install_fake_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write the fake kernel module, make it importable here and in spawned workers and
    subprocesses; return the module name."""
    moddir = tmp_path / "fakemod"
    moddir.mkdir()
    (moddir / "monodir_fake_kernels.py").write_text(FAKE_KERNELS)
    monkeypatch.syspath_prepend(str(moddir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(moddir), str(REPO)]))
    return "monodir_fake_kernels"


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for ``python -m monodir`` subprocesses (repo importable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in (env.get("PYTHONPATH"), str(REPO)) if p])
    env.update(extra)
    return env


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m monodir ARGS`` and capture its output."""
    env = kwargs.pop("env", None) or cli_env()
    return subprocess.run(
        [sys.executable, "-m", "monodir", *args],
        capture_output=True,
        text=True,
        env=env,
        **kwargs,
    )


def read_outputs(out_dir: Path) -> dict[str, np.ndarray]:
    """All MRC outputs of a run, by file name."""
    out = {}
    for name in OUTPUT_MAPS:
        with mrcfile.open(str(out_dir / name), permissive=True) as mrc:
            out[name] = np.array(mrc.data)
    return out


def assert_same_outputs(a: Path, b: Path) -> None:
    """The MRC outputs of two runs are identical, bit for bit."""
    oa, ob = read_outputs(a), read_outputs(b)
    for name in OUTPUT_MAPS:
        np.testing.assert_array_equal(oa[name], ob[name], err_msg=name)


# ------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------


def test_fake_kernel_run_produces_every_output(tmp_path, fake_kernels):
    from monodir.config import load_config
    from monodir.io.store import RunStore
    from monodir.pipeline.runner import run_pipeline

    inputs = make_inputs(tmp_path / "data")
    cfg = load_config(write_config(tmp_path / "c.yaml", inputs, tmp_path / "out", n_workers=2))
    out = run_pipeline(cfg, ["monodir", "run", "c.yaml"], kernels=fake_kernels)
    for name in OUTPUT_MAPS:
        assert (out / name).is_file(), name
    store = RunStore.open(out / "run.zarr", mode="r")
    assert store.status == "complete"
    assert store.done_directions().all()
    attrs = store.attrs
    assert attrs["command_line"] == ["monodir", "run", "c.yaml"]
    assert {"prepare", "directions", "reduce", "export", "total"} <= set(attrs["timings"])
    with mrcfile.open(str(out / "doa.mrc")) as mrc:
        assert float(mrc.voxel_size.x) == pytest.approx(2.0)
        assert tuple(float(v) for v in mrc.header.origin.item()) == (10.0, -4.0, 2.5)
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    assert list((out / "tables").glob("*.star")) and list((out / "tables").glob("*.csv"))
    assert list((out / "figures").glob("*.png"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings"]["directions"] > 0
    assert summary["config"]["directional"]["fast"] is True

    # the run drew part of its figures on the (local) workers
    figures = {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")}
    images = re.findall(r'<img src="([^"]+)"', (out / "report.html").read_text())
    assert len(images) == len(figures) > 10

    # `monodir report RUN_DIR` writes the outputs again from run.zarr, all in this process:
    # the same figures, bit for bit, listed in the same order
    from monodir.cli import main

    (out / "report.html").unlink()
    (out / "doa.mrc").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "doa.mrc").is_file()
    assert {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")} == figures
    assert re.findall(r'<img src="([^"]+)"', (out / "report.html").read_text()) == images


def test_export_draws_here_the_figures_a_worker_failed_to_draw(tmp_path, fake_kernels, monkeypatch):
    from monodir.config import load_config
    from monodir.io.store import RunStore
    from monodir.pipeline import runner
    from monodir.pipeline.runner import export_outputs, run_pipeline

    inputs = make_inputs(tmp_path / "data")
    cfg = load_config(write_config(tmp_path / "c.yaml", inputs, tmp_path / "out", n_workers=1))
    out = run_pipeline(cfg, ["monodir", "run", "c.yaml"], kernels=fake_kernels)
    want = {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")}
    for p in (out / "figures").glob("*.png"):
        p.unlink()

    class LostWorker:  # a future whose task failed
        def result(self, timeout=None):
            raise RuntimeError("worker lost")

    class Client:
        submitted = 0

        def scheduler_info(self):
            return {"workers": {"w1": {}, "w2": {}}}

        def submit(self, *args, **kwargs):
            Client.submitted += 1
            return LostWorker()

    warnings: list[str] = []
    monkeypatch.setattr(runner.log, "warning", lambda msg, *a: warnings.append(msg % a))
    store = RunStore.open(out / "run.zarr", mode="r")
    export_outputs(store, out, client=Client())
    assert Client.submitted == 2
    assert {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")} == want
    assert len(warnings) == 2 and all("drawing them here" in w for w in warnings)


def _run(cfg_path: Path, kernels: str | None = None, **overrides) -> Path:
    from monodir.config import load_config
    from monodir.pipeline.runner import run_pipeline

    sets = [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    cfg = load_config(cfg_path, sets)
    return run_pipeline(cfg, ["monodir", "run", str(cfg_path), *sets], kernels=kernels)


def test_real_kernels_every_output_same_with_1_or_2_workers(tmp_path):
    """Real kernels end to end; 1 and 2 workers agree bit for bit, and agree with the
    in-process API (the pipeline is only a map/reduce over the kernels)."""
    import monodir
    from monodir.io.store import RunStore

    inputs = make_inputs(tmp_path / "data", n=32)
    cfg1 = write_config(tmp_path / "one.yaml", inputs, tmp_path / "one", n_workers=1)
    cfg2 = write_config(tmp_path / "two.yaml", inputs, tmp_path / "two", n_workers=2)
    out1 = _run(cfg1)
    out2 = _run(cfg2)
    assert_same_outputs(out1, out2)
    for name in OUTPUT_MAPS:
        with mrcfile.open(str(out1 / name)) as mrc:
            assert mrc.data.dtype == np.float32 and mrc.data.shape == (32, 32, 32)
            assert float(mrc.voxel_size.x) == pytest.approx(2.0)
            assert tuple(float(v) for v in mrc.header.origin.item()) == (10.0, -4.0, 2.5)

    store = RunStore.open(out1 / "run.zarr", mode="r")
    attrs = store.attrs
    assert attrs["status"] == "complete"
    assert attrs["config"]["directional"]["fast"] is True
    assert attrs["voxel_size"] == 2.0 and attrs["origin"] == [10.0, -4.0, 2.5]
    assert set(attrs["versions"]) >= {"numpy", "pyfftw", "zarr", "dask", "monodir"}
    for stage in ("validate", "staging", "prepare", "directions", "monores", "reduce", "export"):
        assert stage in attrs["timings"], stage
    rows = store.read_rows()
    assert rows.dtype == np.float32 and rows.shape == (46, attrs["n_mask"])
    assert np.isfinite(rows).all()

    # the same numbers from the notebook API on numpy arrays
    with mrcfile.open(str(inputs["map"])) as mrc:
        vol = np.array(mrc.data, np.float32)
    with mrcfile.open(str(inputs["mask"])) as mrc:
        mask = np.array(mrc.data) > 0.5
    mr = monodir.monores(vol, mask, 2.0, low_resolution=12.0, step=0.5)
    np.testing.assert_array_equal(store.load_monores().resolution, mr.resolution)
    dr = monodir.directional(vol, mask, 2.0, fast=True, monores_map=mr.resolution)
    stored = store.load_directional()
    for name, volume in dr.maps.items():
        np.testing.assert_array_equal(stored.maps[name], volume.astype(np.float32), name)


def test_half_maps_run(tmp_path):
    inputs = make_inputs(tmp_path / "data", n=32, half_maps=True)
    out = _run(write_config(tmp_path / "c.yaml", inputs, tmp_path / "out", n_workers=2))
    for name in OUTPUT_MAPS:
        assert (out / name).is_file(), name
    from monodir.io.store import RunStore

    store = RunStore.open(out / "run.zarr", mode="r")
    assert store.has("inputs/half1") and store.has("inputs/half2")
    assert not store.has("inputs/map")


def test_complete_run_is_refused_unless_overwrite(tmp_path, fake_kernels, capsys, monkeypatch):
    from monodir.cli import main

    monkeypatch.setenv("MONODIR_KERNELS", fake_kernels)
    inputs = make_inputs(tmp_path / "data")
    cfg = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out")
    assert main(["run", str(cfg)]) == 0
    marker = tmp_path / "out" / "doa.mrc"
    stamp = marker.stat().st_mtime_ns
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "already holds a complete run" in err and "output.overwrite" in err
    assert marker.stat().st_mtime_ns == stamp
    assert main(["run", str(cfg), "--set", "output.overwrite=true"]) == 0
    assert marker.stat().st_mtime_ns != stamp


def test_batches_of_directions(tmp_path, fake_kernels):
    from monodir.io.store import RunStore

    inputs = make_inputs(tmp_path / "data")
    cfg = write_config(tmp_path / "c.yaml", inputs, tmp_path / "b", n_workers=2)
    out = _run(cfg, fake_kernels, run__batch_size=5, run__reduce_block=500)
    ref = _run(cfg, fake_kernels, output__directory=tmp_path / "ref")
    assert_same_outputs(out, ref)
    store = RunStore.open(out / "run.zarr", mode="r")
    assert store.group["directional/resolution"].chunks == (1, 500)
    assert store.done_directions().all()


def test_progress_log_lines_and_bar():
    import io
    import logging

    from monodir.pipeline.progress import Progress

    logger = logging.getLogger("monodir.pipeline.progress")
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with Progress(10, 4, stream=io.StringIO(), log_every=0) as p:
            assert p.eta() is None
            p.update(2)
            assert p.eta() is not None
            p.update(4)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    text = lines.getvalue()
    assert "4/10 already done" in text
    assert "6/10 done (60%)" in text and "ETA" in text
    assert "10/10 done (100%)" in text

    stream = io.StringIO()
    with Progress(5, 0, stream=stream, bar=True) as p:
        p.update(5)
    assert "5/5" in stream.getvalue()


def test_tasks_use_the_worker_threads_and_one_heavy_task_at_a_time():
    from distributed import Client, LocalCluster

    from monodir.config import ClusterConfig
    from monodir.pipeline.cluster import RESOURCE, local_cluster_kwargs
    from monodir.pipeline.graph import task_threads

    kwargs = local_cluster_kwargs(ClusterConfig(n_workers=1, threads_per_worker=2))
    kwargs.update(processes=False, dashboard_address=None)
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        assert client.submit(task_threads, None, resources={RESOURCE: 1}).result() == 2
        assert client.submit(task_threads, 3).result() == 3
    assert task_threads(None) == 1  # outside a worker


def test_cone_tasks_tune_the_worker_allocator():
    """glibc's mmap threshold is raised once per worker process (see tune_worker_malloc)."""
    import platform

    from monodir.pipeline import graph

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert graph.tune_worker_malloc() is True
    assert graph.tune_worker_malloc() is True  # idempotent


def _glibc_worker_run(code: str, *args: str) -> list[str]:
    """Run ``code`` in a fresh process under the malloc setting a Dask nanny gives its
    workers; the words it prints (skips the test off glibc)."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    ).stdout.split()


def test_tuned_worker_keeps_temporaries_mapped():
    """Under the nanny's ``MALLOC_TRIM_THRESHOLD_``, a tuned worker reuses the memory of a
    freed 3 MiB temporary: allocating it again faults no new pages (untuned, every round
    would map or trim it and fault its 768 pages in again)."""
    code = (
        "import resource, sys, numpy as np\n"
        "from monodir.pipeline.graph import tune_worker_malloc\n"
        "if sys.argv[1] == 'tune': tune_worker_malloc()\n"
        "def rounds():\n"
        "    for _ in range(40):\n"
        "        a = np.empty(3 << 20, np.uint8); a.fill(1); del a\n"
        "        b = np.empty(1 << 10, np.uint8); del b\n"
        "rounds()\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "rounds()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
    )
    faults = {mode: int(_glibc_worker_run(code, mode)[-1]) for mode in ("tune", "plain")}
    assert faults["tune"] < 100, faults
    assert faults["plain"] > 40 * 700, faults  # the behaviour the tuning removes


def test_tasks_hand_free_heap_pages_back():
    """Free memory scattered inside a tuned worker's heap (freed 2 MiB temporaries between
    live small blocks, where the top-of-heap trim threshold does not reach) goes back to
    the system at the next task's start; a heap with little free memory is left alone."""
    code = (
        "import numpy as np\n"
        "from monodir.pipeline.graph import trim_worker_heap, tune_worker_malloc\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS'):\n"
        "            return int(line.split()[1]) // 1024\n"
        "tune_worker_malloc()\n"
        "print(trim_worker_heap())\n"  # nothing much free yet
        "big, small = [], []\n"
        "for _ in range(60):\n"
        "    a = np.empty(2 << 20, np.uint8); a.fill(1); big.append(a)\n"
        "    small.append(np.ones(64, np.uint8))\n"  # pins the heap between the blocks
        "before = rss(); del big\n"
        "print(rss() - before, trim_worker_heap(), rss() - before)\n"
    )
    out = _glibc_worker_run(code)
    assert out[0] == "False"
    freed_kept, trimmed, after = int(out[1]), out[2], int(out[3])
    assert freed_kept > -20, out  # the freed blocks stayed resident (120 MiB freed)
    assert trimmed == "True" and after < -100, out  # and went back at the trim
