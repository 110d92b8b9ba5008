"""The command line: exit statuses, one-line errors, nothing written on an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from test_pipeline_local import make_inputs, run_cli, write_config

from monodir.cli import main


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.fixture
def inputs(tmp_path):
    return make_inputs(tmp_path / "data")


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert main([]) == 2  # a command is required


def test_init_config_writes_commented_default_and_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "my.yaml"
    assert main(["init-config", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("#") and "directional:" in text
    assert yaml.safe_load(text)["cluster"]["kind"] == "local"
    path.write_text("mine")
    assert main(["init-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("monodir: error: ") and err.count("\n") == 1
    assert path.read_text() == "mine"


def test_init_config_default_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init-config"]) == 0
    assert (tmp_path / "monodir.yaml").is_file()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"directional": {"resolution_step": -1}}, "directional.resolution_step"),
        ({"monores": {"gaussain": True}}, "monores.gaussain"),
        ({"monores": {"step": "small"}}, "monores.step"),
        ({"input": {"mask": "missing_mask.mrc"}}, "missing_mask.mrc"),
    ],
)
def test_config_errors_exit_2_with_one_line_and_write_nothing(
    tmp_path, inputs, capsys, change, expected
):
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", inputs, out, extra=change)
    before = _files(tmp_path)
    for command in ("run", "validate"):
        assert main([command, str(cfg)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("monodir: error: "), err
        assert err.count("\n") == 1, err
        assert expected in err
    assert _files(tmp_path) == before
    assert not out.exists()


def test_set_override_error_names_key(tmp_path, inputs, capsys):
    cfg = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out")
    assert main(["run", str(cfg), "--set", "directional.significance=2"]) == 2
    assert "directional.significance" in capsys.readouterr().err
    assert main(["run", str(cfg), "--set", "nonsense"]) == 2
    assert "section.key=value" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_input_file_exit_2(tmp_path, inputs, capsys):
    (tmp_path / "garbage.mrc").write_bytes(b"not an mrc file at all" * 10)
    cfg = write_config(
        tmp_path / "c.yaml", {**inputs, "map": tmp_path / "garbage.mrc"}, tmp_path / "out"
    )
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("monodir: error: ") and "garbage.mrc" in err
    assert main(["run", str(cfg)]) == 2
    assert not (tmp_path / "out").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_validate_ok(tmp_path, inputs, capsys):
    cfg = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out")
    assert main(["validate", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out and "32x32x32" in out
    assert not (tmp_path / "out").exists()


def test_other_exceptions_keep_a_traceback(tmp_path, inputs, capsys, monkeypatch):
    import monodir.pipeline.runner as runner

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(runner, "run_pipeline", boom)
    cfg = write_config(tmp_path / "c.yaml", inputs, tmp_path / "out")
    assert main(["run", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "kaboom" in err


def test_report_hook_needs_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_python_dash_m(tmp_path):
    proc = run_cli(["init-config", str(tmp_path / "x.yaml")])
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(["run", str(tmp_path / "x.yaml")], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("monodir: error: input.map: file not found")
    assert proc.stderr.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["x.yaml"]
