"""Config loading and validation: every mistake names its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from monodir.config import (
    Config,
    apply_overrides,
    config_from_dict,
    default_config_yaml,
    load_config,
    parse_override,
)
from monodir.errors import InputError

BASE = {"input": {"map": "data/map.mrc", "mask": "data/mask.mrc"}}


def _with(**sections) -> dict:
    data = {k: dict(v) for k, v in BASE.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data


def _error(data, base="/tmp") -> str:
    with pytest.raises(InputError) as info:
        config_from_dict(data, base)
    return str(info.value)


def test_defaults():
    cfg = config_from_dict(BASE, "/base")
    assert cfg.monores.low_resolution == 18.0
    assert cfg.monores.step == 0.25
    assert cfg.monores.significance == 0.95
    assert cfg.monores.gaussian is False
    assert cfg.directional.fast is False
    assert cfg.directional.resolution_step == 0.5
    assert cfg.directional.significance == 0.95
    assert cfg.xmipp_compat is False
    assert cfg.output.overwrite is False
    assert cfg.cluster.kind == "local"
    assert cfg.cluster.dashboard == ":8787"
    assert cfg.run.batch_size == 1
    assert cfg.input.sphere_radius == -1


def test_relative_paths_resolve_against_the_config_directory(tmp_path):
    cfg = config_from_dict(_with(output={"directory": "runs/a"}), tmp_path)
    assert cfg.input.map == tmp_path / "data" / "map.mrc"
    assert cfg.input.mask == tmp_path / "data" / "mask.mrc"
    assert cfg.output.directory == tmp_path / "runs" / "a"
    # the default output directory too
    assert config_from_dict(BASE, tmp_path).output.directory.parent == tmp_path


def test_absolute_paths_are_kept(tmp_path):
    cfg = config_from_dict(_with(input={"map": "/abs/m.mrc"}), tmp_path)
    assert cfg.input.map == Path("/abs/m.mrc")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (_with(directional={"resolution_step": -0.5}), "directional.resolution_step"),
        (_with(directional={"resolution_step": 0}), "directional.resolution_step"),
        (_with(monores={"step": -1}), "monores.step"),
        (_with(monores={"significance": 1.0}), "monores.significance"),
        (_with(monores={"significance": 0}), "monores.significance"),
        (_with(directional={"significance": 1.2}), "directional.significance"),
        (_with(monores={"low_resolution": "high"}), "monores.low_resolution"),
        (_with(directional={"fast": "yes"}), "directional.fast"),
        (_with(directional={"fast": 1}), "directional.fast"),
        (_with(input={"voxel_size": -1.0}), "input.voxel_size"),
        (_with(input={"sphere_radius": -3}), "input.sphere_radius"),
        (_with(run={"batch_size": 0}), "run.batch_size"),
        (_with(run={"batch_size": 1.5}), "run.batch_size"),
        (_with(cluster={"kind": "kubernetes"}), "cluster.kind"),
        (_with(cluster={"n_workers": 0}), "cluster.n_workers"),
        (_with(cluster={"job_extra_directives": {"a": 1}}), "cluster.job_extra_directives"),
        (_with(cluster={"adapt": {"minimum": 3, "maximum": 2}}), "cluster.adapt.minimum"),
        (_with(cluster={"adapt": {"minimum": 1, "max": 2}}), "cluster.adapt.max"),
        (_with(cluster={"jobs": 2, "adapt": {"maximum": 2}}), "cluster.jobs"),
        (_with(cluster={"kind": "address"}), "cluster.scheduler"),
        (_with(xmipp_compat="no"), "xmipp_compat"),
        (_with(monores={"lowres": 18}), "monores.lowres"),
        (_with(output={"directory": None}), "output.directory"),
        (_with(input={"half_maps": ["a.mrc"]}), "input.half_maps"),
        ({**BASE, "monores": [1, 2]}, "monores"),
        ({**BASE, "extra_section": {}}, "extra_section"),
        ({"input": {"mask": "m.mrc"}}, "input.map"),
        ({"input": {"map": "m.mrc"}}, "input.mask"),
    ],
)
def test_errors_name_the_key(data, key):
    message = _error(data)
    assert message.startswith(f"{key}:"), message


def test_map_and_half_maps_are_exclusive():
    message = _error(_with(input={"half_maps": ["a.mrc", "b.mrc"]}))
    assert "input.map" in message and "input.half_maps" in message


def test_half_maps_ok(tmp_path):
    cfg = config_from_dict(
        {"input": {"half_maps": ["h1.mrc", "h2.mrc"], "mask": "m.mrc"}}, tmp_path
    )
    assert cfg.input.half_maps == (tmp_path / "h1.mrc", tmp_path / "h2.mrc")
    assert cfg.input.map is None


def test_type_errors_reported_before_consistency_errors():
    message = _error({"directional": {"resolution_step": -1}})
    assert message.startswith("directional.resolution_step:")


def test_integer_accepted_for_float_and_integral_float_for_int():
    cfg = config_from_dict(_with(monores={"low_resolution": 15}, run={"batch_size": 2.0}))
    assert cfg.monores.low_resolution == 15.0 and isinstance(cfg.monores.low_resolution, float)
    assert cfg.run.batch_size == 2 and isinstance(cfg.run.batch_size, int)


def test_slurm_section():
    cfg = config_from_dict(
        _with(
            cluster={
                "kind": "slurm",
                "cores": 8,
                "memory": "16GiB",
                "processes": 1,
                "walltime": "01:00:00",
                "queue": "debug",
                "job_extra_directives": ["--constraint=avx2"],
                "worker_extra_args": ["--lifetime", "55m"],
                "scheduler_options": {"interface": "lo"},
                "adapt": {"minimum": 0, "maximum": 4},
            }
        )
    )
    assert cfg.cluster.adapt.maximum == 4
    assert cfg.cluster.job_extra_directives == ["--constraint=avx2"]
    assert cfg.cluster.scheduler_options == {"interface": "lo"}


def test_to_dict_round_trips(tmp_path):
    cfg = config_from_dict(
        _with(input={"half_maps": ["a.mrc", "b.mrc"], "map": None}, cluster={"jobs": 3}),
        tmp_path,
    )
    data = cfg.to_dict()
    yaml.safe_dump(data)  # plain data
    again = config_from_dict(data, "/elsewhere")
    assert again.to_dict() == data


def test_numeric_dict_ignores_paths_and_cluster(tmp_path):
    a = config_from_dict(_with(cluster={"n_workers": 2}), tmp_path)
    b = config_from_dict(
        _with(input={"map": "other/m.mrc"}, output={"directory": "x"}, run={"batch_size": 3}),
        tmp_path,
    )
    assert a.numeric_dict() == b.numeric_dict()
    c = config_from_dict(_with(directional={"fast": True}), tmp_path)
    assert c.numeric_dict() != a.numeric_dict()


def test_parse_override():
    assert parse_override("directional.fast=true") == (["directional", "fast"], True)
    assert parse_override("monores.step=0.5") == (["monores", "step"], 0.5)
    assert parse_override("cluster.adapt.maximum=4") == (["cluster", "adapt", "maximum"], 4)
    assert parse_override("input.mask_threshold=null") == (["input", "mask_threshold"], None)
    for bad in ("directional.fast", "=3", "a..b=1", "a.b=[1,"):
        with pytest.raises(InputError):
            parse_override(bad)


def test_apply_overrides_creates_sections():
    out = apply_overrides(BASE, ["cluster.adapt.maximum=3", "xmipp_compat=true"])
    assert out["cluster"] == {"adapt": {"maximum": 3}}
    assert out["xmipp_compat"] is True
    assert "cluster" not in BASE  # not modified in place
    with pytest.raises(InputError, match="not a section"):
        apply_overrides({"input": {"map": "x"}}, ["input.map.y=1"])


def test_load_config_with_overrides(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    for name in ("map.mrc", "mask.mrc"):
        (tmp_path / "data" / name).write_bytes(b"x")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(BASE))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(cfg_path, ["directional.fast=true", "output.directory=out"])
    assert cfg.directional.fast is True
    # --set paths are relative to the current directory, file paths to the file's
    assert cfg.output.directory == elsewhere / "out"
    assert cfg.input.map == tmp_path / "data" / "map.mrc"
    assert cfg.source == cfg_path.resolve()
    with pytest.raises(InputError, match=r"^directional\.resolution_step:"):
        load_config(cfg_path, ["directional.resolution_step=-2"])


def test_load_config_missing_input_file_names_key_and_file(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(InputError) as info:
        load_config(cfg_path)
    assert str(info.value).startswith("input.map: file not found")
    assert str(tmp_path / "data" / "map.mrc") in str(info.value)
    load_config(cfg_path, check_files=False)


def test_load_config_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="top level"):
        load_config(top)


def test_default_config_yaml_is_valid_and_commented(tmp_path):
    text = default_config_yaml()
    assert "# " in text
    data = yaml.safe_load(text)
    cfg = config_from_dict(data, tmp_path)
    assert isinstance(cfg, Config)
    defaults = config_from_dict(BASE, tmp_path)
    for section in ("monores", "directional", "run"):
        assert cfg.to_dict()[section] == defaults.to_dict()[section]
    assert cfg.cluster.kind == "local"


@given(
    step=st.floats(allow_nan=False, allow_infinity=False, width=32),
    sig=st.floats(allow_nan=False, allow_infinity=False, width=32),
)
def test_step_and_significance_ranges(step, sig):
    data = _with(directional={"resolution_step": step, "significance": sig})
    if step > 0 and 0 < sig < 1:
        cfg = config_from_dict(data, "/tmp")
        assert cfg.directional.resolution_step == step
    else:
        with pytest.raises(InputError, match=r"^directional\.(resolution_step|significance):"):
            config_from_dict(data, "/tmp")


@pytest.mark.parametrize("name", ["local.yaml", "fast.yaml", "slurm.yaml", "halfmaps.yaml"])
def test_example_configs_are_valid(name):
    path = Path(__file__).resolve().parents[1] / "configs" / name
    text = path.read_text()
    assert text.lstrip().startswith("#")
    cfg = load_config(path, check_files=False)
    assert cfg.input.mask == path.parent / "data" / "mask.mrc"
    if name == "slurm.yaml":
        assert cfg.cluster.kind == "slurm" and cfg.cluster.jobs == 4
    if name == "halfmaps.yaml":
        assert cfg.input.half_maps is not None
