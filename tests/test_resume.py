"""Resume: a killed run, re-run with the same command, skips finished directions and ends
with the same outputs as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_pipeline_local import (
    assert_same_outputs,
    cli_env,
    install_fake_kernels,
    make_inputs,
    run_cli,
    write_config,
)

from monodir.errors import InputError
from monodir.io.store import RunStore


@pytest.fixture
def fake_kernels(tmp_path, monkeypatch) -> str:
    return install_fake_kernels(tmp_path, monkeypatch)


def _n_marked(store_path: Path) -> int:
    """Directions marked done, counted from the marker chunks (cheap, safe while running)."""
    chunk_dir = store_path / "directional" / "done" / "c"
    try:
        return sum(not name.endswith(".partial") for name in os.listdir(chunk_dir))
    except FileNotFoundError:
        return 0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def test_sigkill_during_cone_tasks_then_resume(tmp_path):
    """Real kernels: SIGKILL `monodir run` mid-way, re-run, compare with a clean run."""
    inputs = make_inputs(tmp_path / "data", n=48, voxel_size=1.0)
    extra = {"directional": {"fast": False}, "monores": {"low_resolution": 18.0}}
    cfg = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out", n_workers=1, extra=extra)
    ref_cfg = write_config(
        tmp_path / "ref.yaml", inputs, tmp_path / "ref", n_workers=1, extra=extra
    )
    store_path = tmp_path / "out" / "run.zarr"

    proc = subprocess.Popen(
        [sys.executable, "-m", "monodir", "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(),
        start_new_session=True,  # its own process group: the kill takes the workers too
    )
    total = 81
    try:
        deadline = time.monotonic() + 120
        while True:
            n = _n_marked(store_path)
            if n >= 3 or proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert n < total - 5, f"too late to interrupt ({n} of {total} done)"
    finally:
        _kill_group(proc)

    store = RunStore.open(store_path, mode="r")
    assert store.status == "running"
    done_before = store.done_directions()
    stamps_before = store.finished_at()
    rows_before = store.read_rows()
    assert 0 < done_before.sum() < total

    proc2 = run_cli(["-v", "run", str(cfg)], timeout=300)
    assert proc2.returncode == 0, proc2.stderr
    assert "resuming the run" in proc2.stderr
    assert f"{int(done_before.sum())} already done" in proc2.stderr

    store = RunStore.open(store_path, mode="r")
    assert store.status == "complete"
    assert store.attrs["attempts"] == 2
    assert store.done_directions().all()
    # finished directions were not recomputed: their rows and time stamps are untouched
    np.testing.assert_array_equal(store.finished_at()[done_before], stamps_before[done_before])
    np.testing.assert_array_equal(store.read_rows()[done_before], rows_before[done_before])
    assert (store.finished_at()[~done_before] > stamps_before[done_before].max()).all()

    proc3 = run_cli(["run", str(ref_cfg)], timeout=300)
    assert proc3.returncode == 0, proc3.stderr
    assert_same_outputs(tmp_path / "out", tmp_path / "ref")
    ref_rows = RunStore.open(tmp_path / "ref" / "run.zarr", mode="r").read_rows()
    np.testing.assert_array_equal(store.read_rows(), ref_rows)


def test_resume_recomputes_only_unmarked_directions(tmp_path, fake_kernels):
    """In process, deterministic: unmark some directions of a finished run, resume."""
    from monodir.config import load_config
    from monodir.pipeline.runner import run_pipeline

    inputs = make_inputs(tmp_path / "data")
    cfg_path = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out", n_workers=2)
    out = run_pipeline(load_config(cfg_path), kernels=fake_kernels)
    first = {p.name: p.read_bytes() for p in out.glob("*.mrc")}
    store = RunStore.open(out / "run.zarr")
    stamps = store.finished_at()
    # pretend the run died: status back to running, directions 3 and 7 unmarked, row 3 lost
    redo = [3, 7]
    done = store.group["directional/done"]
    for i in redo:
        done[i] = False
    store.group["directional/resolution"][3, :] = np.nan
    store.set_status("running")

    run_pipeline(load_config(cfg_path), kernels=fake_kernels)
    store = RunStore.open(out / "run.zarr", mode="r")
    after = store.finished_at()
    keep = np.ones(len(after), bool)
    keep[redo] = False
    np.testing.assert_array_equal(after[keep], stamps[keep])
    assert (after[redo] > stamps.max()).all()
    assert store.status == "complete"
    for name, data in first.items():
        assert (out / name).read_bytes()[1024:] == data[1024:], name  # data identical


def test_resume_with_a_different_config_is_refused(tmp_path, fake_kernels):
    from monodir.config import load_config
    from monodir.pipeline.runner import run_pipeline

    inputs = make_inputs(tmp_path / "data")
    cfg_path = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out")
    out = run_pipeline(load_config(cfg_path), kernels=fake_kernels)
    RunStore.open(out / "run.zarr").set_status("running")  # an interrupted run
    with pytest.raises(InputError, match=r"different config; use output\.overwrite: true"):
        run_pipeline(load_config(cfg_path, ["directional.significance=0.9"]), kernels=fake_kernels)
    # cluster and batching are not part of the problem: this resumes
    run_pipeline(load_config(cfg_path, ["run.batch_size=4"]), kernels=fake_kernels)
    # other input data: refused too
    RunStore.open(out / "run.zarr").set_status("running")
    other = make_inputs(tmp_path / "other", seed=5)
    with pytest.raises(InputError, match="different input data"):
        run_pipeline(load_config(cfg_path, [f"input.map={other['map']}"]), kernels=fake_kernels)
    # ... unless overwrite
    run_pipeline(
        load_config(cfg_path, [f"input.map={other['map']}", "output.overwrite=true"]),
        kernels=fake_kernels,
    )
    assert RunStore.open(out / "run.zarr", mode="r").attrs["attempts"] == 1
