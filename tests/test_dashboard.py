"""The Dask dashboard answers while a run is in progress, and its link is printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from test_pipeline_local import cli_env, install_fake_kernels, make_inputs, write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def test_dashboard_answers_during_a_run(tmp_path, monkeypatch):
    kernels = install_fake_kernels(tmp_path, monkeypatch)
    port = _free_port()
    inputs = make_inputs(tmp_path / "data")
    cfg = write_config(
        tmp_path / "c.yaml",
        inputs,
        tmp_path / "out",
        n_workers=1,
        extra={"cluster": {"dashboard": f"127.0.0.1:{port}"}},
    )
    env = cli_env(MONODIR_KERNELS=kernels, FAKE_KERNEL_SLEEP="0.4")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monodir", "run", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/status"
    seen = None
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            code = _status(url)
            if code is not None:
                seen = code
                if code == 200:
                    break
            time.sleep(0.2)
        running = proc.poll() is None
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert seen == 200, f"dashboard answered {seen}; stderr:\n{stderr}"
    assert running, "the run was over before the dashboard answered"
    assert proc.returncode == 0, stderr
    assert f"Dashboard: http://127.0.0.1:{port}/status" in stdout
    assert _status(url) is None  # closed with the run
