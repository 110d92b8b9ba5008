"""Fault injection for the reliability tests (``test_faults.py``, ``test_output_safety.py``).

:data:`FAULT_KERNELS` is a kernel module with the API of ``monodir.core`` (the pipeline looks
kernels up by module name: ``run_pipeline(kernels=...)`` or ``MONODIR_KERNELS``). It delegates
to a base module, the real kernels by default, and injects a fault into the direction task
of one chosen direction, driven by environment variables (inherited by local Dask workers and
by SLURM worker jobs, so the faults happen wherever the task runs):

``MONODIR_FAULT_BASE``
    Module whose kernels are wrapped (default ``monodir.core``, i.e. the real ones; e.g.
    ``monodir_fake_kernels`` for the fast fakes of ``test_pipeline_local``).
``MONODIR_FAULT_DIRECTION``
    The direction index the fault applies to.
``MONODIR_FAULT_KILL_MARKER``
    Kill: the first task to create this file (``O_EXCL``, so exactly once over all workers
    and retries) writes its PID into it and SIGKILLs its own worker process.
``MONODIR_FAULT_RAISE_FLAG``
    Raise: while this file exists, the direction raises ``RuntimeError``.
``MONODIR_FAULT_HOLD_FLAG`` / ``MONODIR_FAULT_HOLD_MARKER``
    Hold: while the flag file exists, the direction waits (up to 5 minutes), after writing
    ``<pid> <SLURM_JOB_ID>`` into the marker file, so a test can interrupt it mid-task.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAULT_MODULE = "monodir_fault_kernels"

FAULT_KERNELS = textwrap.dedent(
    '''
    """Kernels of a base module with an injectable fault in one direction task."""
    from __future__ import annotations

    import importlib
    import os
    import signal
    import time

    from monodir.pipeline.graph import KERNEL_NAMES

    _BASE = os.environ.get("MONODIR_FAULT_BASE", "monodir.core")


    def _base(name):
        if _BASE == "monodir.core":
            module, _, func = KERNEL_NAMES[name].partition(":")
            return getattr(importlib.import_module(module), func)
        return getattr(importlib.import_module(_BASE), name)


    monores = _base("monores")
    prepare_directional = _base("prepare_directional")
    voxel_summaries = _base("voxel_summaries")
    finalize_directional = _base("finalize_directional")
    _direction_resolution = _base("direction_resolution")


    def _fault(i):
        target = os.environ.get("MONODIR_FAULT_DIRECTION")
        if target is None or int(target) != int(i):
            return
        kill = os.environ.get("MONODIR_FAULT_KILL_MARKER")
        if kill:
            try:
                fd = os.open(kill, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        flag = os.environ.get("MONODIR_FAULT_RAISE_FLAG")
        if flag and os.path.exists(flag):
            raise RuntimeError(f"injected failure in direction {i}")
        hold = os.environ.get("MONODIR_FAULT_HOLD_FLAG")
        if hold and os.path.exists(hold):
            marker = os.environ["MONODIR_FAULT_HOLD_MARKER"]
            with open(marker + ".tmp", "w") as fh:
                fh.write(f"{os.getpid()} {os.environ.get('SLURM_JOB_ID', '')}")
            os.replace(marker + ".tmp", marker)
            deadline = time.monotonic() + 300
            while os.path.exists(hold) and time.monotonic() < deadline:
                time.sleep(0.1)


    def direction_resolution(setup, i, threads=1):
        _fault(i)
        return _direction_resolution(setup, i, threads=threads)
    '''
)


def install_fault_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, base: str = "monodir.core"
) -> str:
    """Write the fault kernel module, make it importable here, in spawned workers and in
    subprocesses (``PYTHONPATH``); return its module name.

    With ``base="monodir_fake_kernels"`` call ``install_fake_kernels`` first (same folder).
    """
    moddir = tmp_path / "fakemod"
    moddir.mkdir(exist_ok=True)
    (moddir / f"{FAULT_MODULE}.py").write_text(FAULT_KERNELS)
    monkeypatch.syspath_prepend(str(moddir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(moddir), str(REPO)]))
    monkeypatch.setenv("MONODIR_FAULT_BASE", base)
    for name in (
        "MONODIR_FAULT_DIRECTION",
        "MONODIR_FAULT_KILL_MARKER",
        "MONODIR_FAULT_RAISE_FLAG",
        "MONODIR_FAULT_HOLD_FLAG",
        "MONODIR_FAULT_HOLD_MARKER",
    ):
        monkeypatch.delenv(name, raising=False)
    return FAULT_MODULE


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size (to show that nothing was written)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
