"""Output safety: nothing finished is overwritten, final files appear atomically, and a
failed run leaves nothing that looks finished but a store that resumes.

A complete run refused without ``output.overwrite`` (and replaced with it) is tested in
``test_pipeline_local.py::test_complete_run_is_refused_unless_overwrite``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fault_helpers import install_fault_kernels, tree
from test_pipeline_local import install_fake_kernels, make_inputs, write_config

from monodir.cli import main
from monodir.config import load_config
from monodir.errors import InputError
from monodir.io.store import RunStore
from monodir.pipeline.runner import (
    MRC_OUTPUTS,
    REPORT_FILES,
    load_inputs,
    lock_run_directory,
    open_run_store,
    regenerate_outputs,
    run_pipeline,
)

DIRECTION = 3


def finished_looking(out: Path) -> list[str]:
    """Final files in a run directory (anything a user could take for a result)."""
    names = [n for n in (*MRC_OUTPUTS, *REPORT_FILES) if (out / n).exists()]
    for sub in ("tables", "figures"):
        if (out / sub).is_dir():
            names += [f"{sub}/{p.name}" for p in (out / sub).iterdir()]
    return names


@pytest.fixture
def fake(tmp_path, monkeypatch) -> str:
    """The fast fake kernels behind the fault-injecting substitute; returns its name."""
    install_fake_kernels(tmp_path, monkeypatch)
    return install_fault_kernels(tmp_path, monkeypatch, base="monodir_fake_kernels")


def test_failed_direction_leaves_a_resumable_run_and_no_final_file(
    tmp_path, fake, monkeypatch, capsys
):
    inputs = make_inputs(tmp_path / "data")
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", inputs, out, n_workers=1)
    flag = tmp_path / "fail"
    flag.touch()
    monkeypatch.setenv("MONODIR_KERNELS", fake)
    monkeypatch.setenv("MONODIR_FAULT_DIRECTION", str(DIRECTION))
    monkeypatch.setenv("MONODIR_FAULT_RAISE_FLAG", str(flag))

    assert main(["run", str(cfg)]) == 1  # a bug-like failure: traceback, status 1
    err = capsys.readouterr().err
    assert f"injected failure in direction {DIRECTION}" in err
    assert "run the same command again to resume" in err
    assert finished_looking(out) == []
    store = RunStore.open(out / "run.zarr", mode="r")
    assert store.status == "running"
    done = store.done_directions()
    assert not done[DIRECTION]
    stamps = store.finished_at()

    flag.unlink()  # the cause is fixed: the same command finishes the run
    assert main(["run", str(cfg)]) == 0
    store = RunStore.open(out / "run.zarr", mode="r")
    assert store.status == "complete" and store.attrs["attempts"] == 2
    assert store.done_directions().all()
    np.testing.assert_array_equal(store.finished_at()[done], stamps[done])  # not recomputed
    assert set(MRC_OUTPUTS) <= set(finished_looking(out))


def test_failed_export_removes_its_partial_files(tmp_path, fake, monkeypatch):
    """An error half-way through the export (after the MRC maps) removes what it wrote."""
    import monodir.report

    inputs = make_inputs(tmp_path / "data")
    out = tmp_path / "out"
    cfg = load_config(write_config(tmp_path / "c.yaml", inputs, out, n_workers=1))

    def broken(*args, **kwargs):
        assert (out / "doa.mrc").is_file()  # the maps were written before
        raise OSError(28, "No space left on device")

    real = monodir.report.write_report
    monkeypatch.setattr(monodir.report, "write_report", broken)
    with pytest.raises(OSError, match="No space left"):
        run_pipeline(cfg, kernels=fake)
    assert finished_looking(out) == []
    assert RunStore.open(out / "run.zarr", mode="r").status == "running"

    # a driver killed during the export leaves files behind: the next attempt removes them
    # as soon as it resumes, before computing anything
    (out / "doa.mrc").write_bytes(b"left by a killed export")
    (out / "tables").mkdir()
    (out / "tables" / "thresholds.csv").write_text("x\n")
    store, resumed = open_run_store(cfg, load_inputs(cfg), ["monodir", "run"])
    assert resumed and finished_looking(out) == []
    del store

    monkeypatch.setattr(monodir.report, "write_report", real)
    run_pipeline(cfg, kernels=fake)
    assert RunStore.open(out / "run.zarr", mode="r").status == "complete"
    assert "report.html" in finished_looking(out)


def test_final_files_appear_atomically(tmp_path, fake, monkeypatch):
    """Every final file is renamed into place (os.replace) from a temporary file in the
    same directory; none is written in place."""
    inputs = make_inputs(tmp_path / "data")
    out = tmp_path / "out"
    run_pipeline(load_config(write_config(tmp_path / "c.yaml", inputs, out)), kernels=fake)
    before = set(finished_looking(out))
    for name in before:
        (out / name).unlink()

    renamed: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        renamed.append((str(src), str(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    regenerate_outputs(out)
    targets = {str(Path(dst).relative_to(out)) for _, dst in renamed}
    assert set(finished_looking(out)) == before
    assert before <= targets, sorted(before - targets)
    for src, dst in renamed:
        assert Path(src).parent == Path(dst).parent and Path(src).name.startswith(".")
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_output_files_without_a_store_are_not_overwritten(tmp_path, fake, capsys):
    """A directory with results but no run.zarr (e.g. from another tool or an older run)."""
    inputs = make_inputs(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    (out / "doa.mrc").write_bytes(b"precious")
    cfg = write_config(tmp_path / "c.yaml", inputs, out)
    before = tree(out)
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds output files" in err
    assert "output.overwrite" in err
    assert tree(out) == before


def test_a_second_driver_on_the_same_directory_is_refused(tmp_path, fake, capsys):
    inputs = make_inputs(tmp_path / "data")
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", inputs, out)
    with lock_run_directory(out):  # as a running `monodir run` holds it
        assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "is in use by another monodir run (pid" in err and err.count("\n") == 1
    assert not (out / "run.zarr").exists()


def test_lock_is_released_when_the_holder_ends(tmp_path):
    with lock_run_directory(tmp_path / "d"):
        with pytest.raises(InputError, match="in use"), lock_run_directory(tmp_path / "d"):
            pass
    with lock_run_directory(tmp_path / "d"):
        pass
