"""The README's two set-up commands, followed literally.

The first (install + demo) runs in a fresh virtual environment on a copy of the repository
(pip may reuse its wheel cache); the second is this very CI script, so here we only check
that the README names it and that it runs the same pytest command as ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import mrcfile
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_readme_has_exactly_two_setup_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert "monodir demo" in cmds[0]
    assert cmds[1] == "bash .ci/run"
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r'^TEST_CMD="(.+)"$', ci, re.M).group(1)
    assert f"`{test_cmd}`" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_install_and_demo_in_fresh_venv(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the tracked files")
    src = tmp_path / "src"
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    untracked = subprocess.run(
        ["git", "ls-files", "-z", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    files += untracked.decode().split("\0")
    for name in filter(None, files):
        if not (ROOT / name).is_file():
            continue
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bindir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(env_dir)
    env["MPLBACKEND"] = "Agg"
    cmd = _readme_commands()[0]
    # the README says python3: inside the venv that is the venv's interpreter
    proc = subprocess.run(
        ["bash", "-c", cmd], cwd=src, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = src / "monodir-demo" / "run"
    assert "Report:" in proc.stdout
    assert (run / "report.html").stat().st_size > 10_000
    summary = json.loads((run / "summary.json").read_text())
    assert summary["anisotropy"]["axis"]
    for name in ("monores_resolution.mrc", "radial_resolution.mrc", "anisotropy.mrc"):
        with mrcfile.open(run / name) as mrc:
            assert mrc.data.dtype.name == "float32"
            assert abs(float(mrc.voxel_size.x) - 1.2) < 1e-4
    for table in ("thresholds", "radial_averages", "preferred_directions"):
        assert (run / "tables" / f"{table}.star").exists()
        assert (run / "tables" / f"{table}.csv").exists()
    assert sys.executable  # the outer interpreter was not used for the demo
