"""Property: whatever the config and the MRC files look like, monodir either accepts them or
refuses them with exit status 2 and one line, never a traceback (exit status 1).

Hypothesis generates configs (extra and missing keys, wrong types, out-of-range numbers) and
MRC files (voxel sizes including 0, negative and NaN, every axis order and invalid ones, MRC
modes 0/1/2/6/12, cubic and non-cubic boxes, NaN voxels, binary, soft, empty and 0/255
masks, corrupted header words, truncation) and runs ``monodir validate`` on them, in this
process (each example takes milliseconds). A few generated inputs that pass are then run in
full (``monodir run`` with the fast fake kernels of ``test_pipeline_local``).

The examples are derandomised (the same ones on every run, so CI is reproducible); set
``MONODIR_HYPOTHESIS_EXAMPLES`` to search further, e.g. ``=2000``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import tempfile
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_pipeline_local import install_fake_kernels

from monodir.cli import main
from monodir.config import _SECTIONS, AdaptConfig

N_EXAMPLES = int(os.environ.get("MONODIR_HYPOTHESIS_EXAMPLES", "150"))

SETTINGS = settings(
    max_examples=N_EXAMPLES,
    deadline=None,
    derandomize=N_EXAMPLES <= 150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

#: every ``section.key`` of the config
KEYS = [f"{name}.{f.name}" for name, cls in _SECTIONS.items() for f in fields(cls)]
KEYS += [f"cluster.adapt.{f.name}" for f in fields(AdaptConfig)] + ["xmipp_compat"]

# ------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------

special_numbers = st.sampled_from(
    [0, -1, 1, 2, 0.5, 1e-9, 1e9, 10**12, -(10**12), 1e300, 18.0, 0.25, 0.95, 1.0000001]
)
values = st.one_of(
    st.none(),
    st.booleans(),
    special_numbers,
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["64MiB", "2GiB", "lots", "-5GiB", "1e400GB", "0", "nan GB", "", ":0"]),
    st.sampled_from(["local", "slurm", "address", "tcp://127.0.0.1:1"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


#: a valid map and mask (32³, 2 Å, binary sphere of radius 8)
VALID_VOLUMES: dict[str, Any] = {
    "shape": (32, 32, 32),
    "voxel_size": 2.0,
    "mask_voxel_size": None,  # None: as the map's
    "axis_order": (1, 2, 3),
    "dtype": "float32",
    "nan": None,
    "mask": "sphere8",
    "mask_shape_differs": False,
    "corrupt": None,
    "truncate": None,
    "origin": (0.0, 0.0, 0.0),
}

#: how each aspect may differ from VALID_VOLUMES (some variants are still valid)
VOLUME_VARIANTS = {
    "shape": st.sampled_from([(16, 16, 16), (24, 24, 24), (40, 40, 40), (32, 32, 30), (8, 32, 32)]),
    "voxel_size": st.one_of(
        st.sampled_from([1.0, 0.0, -2.0, float("nan"), float("inf"), 1e-6, 1e6]),
        st.tuples(*[st.sampled_from([2.0, 2.2, 0.0]) for _ in range(3)]),
    ),
    "mask_voxel_size": st.sampled_from([2.0, 0.0, 2.5, -1.0]),
    "axis_order": st.one_of(
        st.permutations([1, 2, 3]).map(tuple),
        st.tuples(*[st.integers(-1, 4) for _ in range(3)]),
    ),
    "dtype": st.sampled_from(["int8", "int16", "uint16", "float16"]),
    "nan": st.sampled_from(["nan", "inf"]),
    "mask": st.sampled_from(["sphere4", "sphere14", "soft", "empty", "255", "full", "nan"]),
    "mask_shape_differs": st.just(True),
    "corrupt": st.tuples(st.integers(0, 55), st.integers(-(2**31), 2**31 - 1)),
    "truncate": st.sampled_from([0, 100, 1024, 5000, 100_000]),
    "origin": st.sampled_from([(1e30, -5.0, float("nan")), (-3.5, 2.0, 1e5)]),
}


@st.composite
def volumes(draw: st.DrawFn) -> dict[str, Any]:
    """How to write the map and the mask: the valid ones with 0 to 3 aspects changed."""
    n = draw(st.sampled_from([0, 1, 1, 2, 3]))
    keys = draw(
        st.lists(st.sampled_from(sorted(VOLUME_VARIANTS)), min_size=n, max_size=n, unique=True)
    )
    spec = dict(VALID_VOLUMES)
    for key in keys:
        spec[key] = draw(VOLUME_VARIANTS[key])
    return spec


#: valid cluster sections of each kind (validate starts nothing, so SLURM need not be there)
CLUSTERS = {
    "local": [],
    "slurm": [
        ("cluster.kind", "slurm"),
        ("cluster.n_workers", None),
        ("cluster.threads_per_worker", None),
        ("cluster.cores", 1),
        ("cluster.memory", "2GiB"),
        ("cluster.queue", "debug"),
        ("cluster.jobs", 1),
    ],
    "address": [
        ("cluster.kind", "address"),
        ("cluster.n_workers", None),
        ("cluster.threads_per_worker", None),
        ("cluster.scheduler", "tcp://127.0.0.1:1"),
    ],
}


@st.composite
def configs(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Mutations of a valid config: (dotted key, value) to set, or (key, DELETE)."""
    out = list(CLUSTERS[draw(st.sampled_from(["local", "local", "slurm", "address"]))])
    n = draw(st.sampled_from([0, 0, 1, 1, 2, 3]))
    for _ in range(n):
        kind = draw(st.sampled_from(["set", "set", "delete", "extra"]))
        if kind == "extra":
            section = draw(st.sampled_from([*list(_SECTIONS), ""]))
            name = draw(st.text(min_size=1, max_size=8))
            out.append((f"{section}.{name}" if section else name, draw(values)))
        elif kind == "delete":
            out.append((draw(st.sampled_from(KEYS)), DELETE))
        else:
            key = draw(st.one_of(st.sampled_from(sorted(KEY_VALUES)), st.sampled_from(KEYS)))
            likely = KEY_VALUES.get(key)
            out.append((key, draw(st.one_of(likely, values) if likely is not None else values)))
    return out


memory_strings = st.sampled_from(
    ["64MiB", "2GiB", "lots", "-5GiB", "1e400GB", "0", "nan GB", "", "1e-9B", "3.5 GB"]
)
#: values of the right kind, often at the edge, for some keys
KEY_VALUES = {
    "cluster.memory": memory_strings,
    "cluster.kind": st.sampled_from(["local", "slurm", "address", "pbs"]),
    "cluster.scheduler": st.sampled_from(["tcp://127.0.0.1:1", "", "nonsense"]),
    "cluster.cores": st.sampled_from([1, 0, 2, 10**9]),
    "cluster.processes": st.sampled_from([1, 2, 0, 10**9]),
    "cluster.n_workers": st.sampled_from([1, 2, 0, 10**9]),
    "input.voxel_size": special_numbers,
    "input.mask_threshold": special_numbers,
    "monores.low_resolution": special_numbers,
    "input.half_maps": st.sampled_from([["map.mrc", "map.mrc"], ["map.mrc", "mask.mrc"]]),
    "input.exclusion_mask": st.sampled_from(["mask.mrc", "map.mrc", "none.mrc"]),
}


DELETE = object()

# ------------------------------------------------------------------------------------------
# writing the inputs
# ------------------------------------------------------------------------------------------


def _grid(shape: tuple[int, int, int]) -> np.ndarray:
    """Coordinates ``z, y, x`` relative to the box centre."""
    centre = np.array(shape, np.float32)[:, None, None, None] // 2
    return np.indices(shape, dtype=np.float32) - centre


def _volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = _grid(shape)
    vol = np.exp(-(x**2 + 2 * y**2 + 3 * z**2) / 30.0) * 100
    return (vol + rng.standard_normal(shape)).astype(np.float32)


def _mask(shape: tuple[int, int, int], kind: str) -> np.ndarray:
    z, y, x = _grid(shape)
    r = np.sqrt(x**2 + y**2 + z**2)
    if kind.startswith("sphere"):
        return (r <= int(kind[6:])).astype(np.float32)
    if kind == "soft":
        return np.exp(-(r**2) / 20).astype(np.float32)
    if kind == "empty":
        return np.zeros(shape, np.float32)
    if kind == "255":
        return (r <= 8).astype(np.float32) * 255
    if kind == "full":
        return np.ones(shape, np.float32)
    m = (r <= 8).astype(np.float32)
    m[0, 0, 0] = np.nan
    return m


def _write(path: Path, zyx: np.ndarray, spec: dict[str, Any], voxel_size: Any) -> Path:
    order = spec["axis_order"]
    data = zyx
    if sorted(order) == [1, 2, 3]:
        mapc, mapr, maps = order
        data = zyx.transpose(3 - maps, 3 - mapr, 3 - mapc)  # [section, row, column]
    dtype = np.dtype(spec["dtype"])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        finite = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
        data = np.clip(np.round(finite), info.min, info.max)
    data = np.ascontiguousarray(data).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.new(str(path), data, overwrite=True) as mrc:
            if voxel_size is not None:
                mrc.voxel_size = voxel_size
            mrc.header.mapc, mrc.header.mapr, mrc.header.maps = order
            mrc.header.origin = spec["origin"]
    if spec["corrupt"] is not None:
        word, value = spec["corrupt"]
        raw = bytearray(path.read_bytes())
        raw[4 * word : 4 * word + 4] = np.int32(value).tobytes()
        path.write_bytes(bytes(raw))
    if spec["truncate"] is not None:
        raw = path.read_bytes()
        path.write_bytes(raw[: spec["truncate"]])
    return path


def _set(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    if value is DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def make_case(tmp: Path, spec: dict[str, Any], mutations: list[tuple[str, Any]]) -> Path:
    """Write map, mask and config under ``tmp``; return the config's path."""
    shape = spec["shape"]
    vol = _volume(shape)
    if spec["nan"] == "nan":
        vol[1, 2, 3] = np.nan
    elif spec["nan"] == "inf":
        vol[1, 2, 3] = np.inf
    mask_shape = (shape[0], shape[1], shape[2] - 2) if spec["mask_shape_differs"] else shape
    map_path = _write(tmp / "map.mrc", vol, spec, spec["voxel_size"])
    mask_spec = {**spec, "corrupt": None, "truncate": None, "dtype": "float32", "nan": None}
    mask_path = _write(
        tmp / "mask.mrc", _mask(mask_shape, spec["mask"]), mask_spec, spec["mask_voxel_size"]
    )
    data: dict[str, Any] = {
        "input": {"map": map_path.name, "mask": mask_path.name},
        "monores": {"low_resolution": 12.0, "step": 0.5},
        "directional": {"fast": True},
        "output": {"directory": "out"},
        "cluster": {"kind": "local", "n_workers": 1, "threads_per_worker": 1, "dashboard": ":0"},
    }
    for key, value in mutations:
        _set(data, key, value)
    cfg = tmp / "run.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True))
    return cfg


def run_cli_in_process(args: list[str]) -> tuple[int, str, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main(args)
    return status, out.getvalue(), err.getvalue()


def check_outcome(status: int, out: str, err: str) -> None:
    """Accepted (0, "config OK") or refused (2, one line); never anything else."""
    assert "Traceback" not in err, err
    assert status in (0, 2), f"exit status {status}: {err}"
    if status == 2:
        lines = err.splitlines()
        errors = [ln for ln in lines if ln.startswith("monodir: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], err
        assert len(errors[0]) > len("monodir: error: ") + 10, err
        # anything before it is a log line (a warning), not part of the message
        assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", ln) for ln in lines[:-1]), err


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------


SLURM = CLUSTERS["slurm"]


@SETTINGS
@given(spec=volumes(), mutations=configs())
@example(spec=VALID_VOLUMES, mutations=[*SLURM, ("cluster.memory", "1e400GB")])
@example(spec=VALID_VOLUMES, mutations=[*SLURM, ("cluster.memory", "nan GB")])
@example(spec=VALID_VOLUMES, mutations=[*SLURM, ("cluster.memory", "64MiB")])
@example(spec=VALID_VOLUMES, mutations=[*SLURM, ("cluster.processes", 2)])
@example(spec=VALID_VOLUMES, mutations=[("cluster.n_workers", 10**9)])
@example(spec=VALID_VOLUMES, mutations=[*CLUSTERS["address"], ("cluster.scheduler", "tcp://a:b")])
@example(spec=VALID_VOLUMES, mutations=[*CLUSTERS["address"], ("cluster.scheduler", "")])
@example(spec=VALID_VOLUMES, mutations=[("input.half_maps", ["map.mrc", "mask.mrc"])])
@example(spec=VALID_VOLUMES, mutations=[("input.exclusion_mask", "map.mrc")])
@example(spec=VALID_VOLUMES, mutations=[("input.voxel_size", 1e300)])
@example(spec=VALID_VOLUMES, mutations=[("input.mask_threshold", -1e300)])
@example(spec={**VALID_VOLUMES, "voxel_size": 0.0}, mutations=[])
@example(spec={**VALID_VOLUMES, "voxel_size": 0.0}, mutations=[("input.voxel_size", 2.0)])
@example(spec={**VALID_VOLUMES, "mask_voxel_size": 2.5}, mutations=[])
@example(spec={**VALID_VOLUMES, "axis_order": (3, 2, 1), "dtype": "int8"}, mutations=[])
def test_validate_accepts_or_refuses_in_one_line(spec, mutations):
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        cfg = make_case(tmp, spec, mutations)
        files = sorted(p.name for p in tmp.iterdir())
        status, out, err = run_cli_in_process(["validate", str(cfg)])
        check_outcome(status, out, err)
        if status == 0:
            assert out.startswith("config OK")
        assert sorted(p.name for p in tmp.iterdir()) == files, "validate wrote something"


@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    order=st.permutations([1, 2, 3]).map(tuple),
    dtype=st.sampled_from(["int16", "float32", "int8"]),
    voxel_size=st.sampled_from([2.0, 0.0]),
)
def test_full_run_of_valid_variants(tmp_path_factory, monkeypatch, order, dtype, voxel_size):
    """A few variants that validate also run to the end (fake kernels), or are refused in one
    line: header voxel size 0 is given in the config instead."""
    tmp = tmp_path_factory.mktemp("full")
    monkeypatch.setenv("MONODIR_KERNELS", install_fake_kernels(tmp, monkeypatch))
    spec = {**VALID_VOLUMES, "voxel_size": voxel_size, "axis_order": order, "dtype": dtype}
    sets = [] if voxel_size else [("input.voxel_size", 2.0)]
    cfg = make_case(tmp, spec, sets)
    status, out, err = run_cli_in_process(["run", str(cfg)])
    check_outcome(status, out, err)
    assert status == 0, err
    assert (tmp / "out" / "anisotropy.mrc").is_file() and "done:" in out
    with mrcfile.open(str(tmp / "out" / "anisotropy.mrc")) as mrc:
        assert math.isclose(float(mrc.voxel_size.x), 2.0, rel_tol=1e-6)


def test_strategies_cover_the_interesting_inputs():
    """Guard against the strategies drifting to trivial cases: a fixed sample of them has
    accepted and refused inputs, and refusals of several kinds."""
    seen: dict[int, int] = {}

    @settings(max_examples=60, derandomize=True, deadline=None, database=None)
    @given(spec=volumes(), mutations=configs())
    def sample(spec, mutations):
        with tempfile.TemporaryDirectory() as name:
            cfg = make_case(Path(name), spec, mutations)
            status, _, _ = run_cli_in_process(["validate", str(cfg)])
            seen[status] = seen.get(status, 0) + 1

    sample()
    assert seen.get(0, 0) >= 5 and seen.get(2, 0) >= 15, seen
    assert set(seen) <= {0, 2}, seen


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
