"""Bad inputs are refused before any work: exit status 2, one line, nothing written.

Each case of :data:`CASES` builds a small run (32³ synthetic map and mask, see
``test_pipeline_local.make_inputs``), breaks one thing, and runs ``monodir run`` and
``monodir validate`` on it through :func:`monodir.cli.main` (what ``python -m monodir`` calls).
Both must exit with status 2 after printing exactly one line ``monodir: error: ...`` that names
the file or config key at fault, and must not create the output directory or change any file.

The table in ``docs/reliability.md`` is this module's output::

    python tests/test_bad_inputs.py > /tmp/table.md

Also here: an MRC file stored with axis order MAPC/MAPR/MAPS = 3,2,1 gives the same outputs
as the same map stored x,y,z (real kernels, end to end).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from fault_helpers import tree
from shared_data import DATA
from test_pipeline_local import assert_same_outputs, make_inputs, run_cli, write_config

from monodir.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
REAL_MAP = DATA / "real" / "maps" / "emd_3488.mrc"
REAL_CONTOUR_MASK = DATA / "real" / "maps" / "emd_3488_contour_mask.mrc"


# --------------------------------------------------------------------------------------------
# building broken inputs
# --------------------------------------------------------------------------------------------


def write_mrc(
    path: Path,
    data: np.ndarray,
    voxel_size: float | tuple[float, float, float] | None = 2.0,
    **header: object,
) -> Path:
    """Write ``data`` (stored as given, ``[section, row, column]``) and patch header fields."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile warns about NaN data
        mrc = mrcfile.new(str(path), np.asarray(data), overwrite=True)
    with mrc:
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
        for key, value in header.items():
            setattr(mrc.header, key, value)
    return path


def read(path: Path) -> np.ndarray:
    with mrcfile.open(str(path), permissive=True) as mrc:
        return np.array(mrc.data, dtype=np.float32)


@dataclass
class Run:
    """What a case produced: the config, extra ``--set`` options, an optional patch."""

    config: Path
    sets: list[str] = field(default_factory=list)
    patch: Callable[[], contextlib.AbstractContextManager] | None = None


@dataclass
class Case:
    """One bad input: how to make it, and what the message must name."""

    id: str
    what: str
    build: Callable[[Path], Run]
    expect: tuple[str, ...]
    needs_data: bool = False


def _base(tmp: Path, **kwargs: object) -> tuple[dict[str, Path], Path]:
    inputs = make_inputs(tmp / "data", **kwargs)  # type: ignore[arg-type]
    return inputs, tmp / "out"


def _config(tmp: Path, inputs: dict[str, Path], **extra: dict) -> Path:
    return write_config(tmp / "run.yaml", inputs, tmp / "out", n_workers=1, extra=extra or None)


def _with_map(tmp: Path, make: Callable[[Path, dict[str, Path]], Path]) -> Run:
    """Replace the map by the file ``make(directory, inputs)`` writes."""
    inputs, _ = _base(tmp)
    return Run(_config(tmp, {**inputs, "map": make(tmp / "data", inputs)}))


def _with_mask(tmp: Path, make: Callable[[Path, dict[str, Path]], Path]) -> Run:
    inputs, _ = _base(tmp)
    return Run(_config(tmp, {**inputs, "mask": make(tmp / "data", inputs)}))


def _sets(*sets: str, **kwargs: object) -> Callable[[Path], Run]:
    def build(tmp: Path) -> Run:
        inputs, _ = _base(tmp, **kwargs)  # type: ignore[arg-type]
        return Run(_config(tmp, inputs), [s.replace("{tmp}", str(tmp)) for s in sets])

    return build


def _truncated(d: Path, inputs: dict[str, Path]) -> Path:
    raw = inputs["map"].read_bytes()
    path = d / "truncated.mrc"
    path.write_bytes(raw[: 1024 + (len(raw) - 1024) // 2])
    return path


def _text(d: Path, inputs: dict[str, Path]) -> Path:
    path = d / "notes.mrc"
    path.write_text("these are my notes, not a map\n" * 50)
    return path


def _nan_map(d: Path, inputs: dict[str, Path]) -> Path:
    data = read(inputs["map"])
    data[3, 4, 5] = np.nan
    return write_mrc(d / "nan_map.mrc", data)


def _inf_mask(d: Path, inputs: dict[str, Path]) -> Path:
    data = read(inputs["mask"])
    data[16, 16, 16] = np.inf
    return write_mrc(d / "inf_mask.mrc", data)


def _soft_mask(d: Path, inputs: dict[str, Path]) -> Path:
    n = 32
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    soft = np.exp(-(x**2 + y**2 + z**2) / (2 * 5.0**2)).astype(np.float32)
    return write_mrc(d / "soft_mask.mrc", soft)


def _empty_mask(d: Path, inputs: dict[str, Path]) -> Path:
    return write_mrc(d / "empty_mask.mrc", np.zeros((32, 32, 32), np.float32))


def _mask_other_box(d: Path, inputs: dict[str, Path]) -> Path:
    data = np.zeros((32, 30, 30), np.float32)
    data[12:20, 11:19, 11:19] = 1
    return write_mrc(d / "mask_30.mrc", data)


def _mask_other_voxel_size(d: Path, inputs: dict[str, Path]) -> Path:
    return write_mrc(d / "mask_2.5A.mrc", read(inputs["mask"]), voxel_size=2.5)


def _mask_too_large(d: Path, inputs: dict[str, Path]) -> Path:
    n = 32
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    return write_mrc(d / "big_mask.mrc", (x**2 + y**2 + z**2 <= 14**2).astype(np.float32))


def _no_voxel_size(d: Path, inputs: dict[str, Path]) -> Path:
    return write_mrc(d / "no_pixel_size.mrc", read(inputs["map"]), voxel_size=0.0)


def _anisotropic(d: Path, inputs: dict[str, Path]) -> Path:
    return write_mrc(d / "anisotropic.mrc", read(inputs["map"]), voxel_size=(2.0, 2.0, 2.4))


def _bad_axes(d: Path, inputs: dict[str, Path]) -> Path:
    return write_mrc(d / "bad_axes.mrc", read(inputs["map"]), mapc=1, mapr=1, maps=3)


def _complex(d: Path, inputs: dict[str, Path]) -> Path:
    return write_mrc(d / "complex.mrc", read(inputs["map"]).astype(np.complex64))


def _image(d: Path, inputs: dict[str, Path]) -> Path:
    return write_mrc(d / "image.mrc", read(inputs["map"])[16])


def _not_cubic(tmp: Path) -> Run:
    inputs, _ = _base(tmp)
    d = tmp / "data"
    data, mask = read(inputs["map"]), read(inputs["mask"])
    pad = ((4, 4), (0, 0), (0, 0))  # nz = 40
    return Run(
        _config(
            tmp,
            {
                "map": write_mrc(d / "map_32x32x40.mrc", np.pad(data, pad)),
                "mask": write_mrc(d / "mask_32x32x40.mrc", np.pad(mask, pad)),
            },
        )
    )


def _tiny_box(tmp: Path) -> Run:
    inputs, _ = _base(tmp)
    d = tmp / "data"
    return Run(
        _config(
            tmp,
            {
                "map": write_mrc(d / "map_12.mrc", read(inputs["map"])[10:22, 10:22, 10:22]),
                "mask": write_mrc(d / "mask_12.mrc", read(inputs["mask"])[10:22, 10:22, 10:22]),
            },
        )
    )


def _half_maps(tmp: Path, change: Callable[[Path, Path], Path] | None) -> Run:
    inputs, _ = _base(tmp, half_maps=True)
    if change is not None:
        inputs = {**inputs, "half2": change(tmp / "data", inputs["half2"])}
    return Run(_config(tmp, inputs))


def _half2_other_box(d: Path, half2: Path) -> Path:
    return write_mrc(d / "half2_36.mrc", np.pad(read(half2), 2))


def _half2_other_voxel_size(d: Path, half2: Path) -> Path:
    return write_mrc(d / "half2_2.2A.mrc", read(half2), voxel_size=2.2)


def _half2_identical(d: Path, half2: Path) -> Path:
    return write_mrc(d / "half2_copy_of_half1.mrc", read(d / "half1.mrc"))


def _unreadable(tmp: Path) -> Run:
    inputs, _ = _base(tmp)
    path = inputs["map"]
    path.chmod(0)

    @contextlib.contextmanager
    def no_read() -> Iterator[None]:
        # root reads anything: make os.access answer as it would for a normal user
        import monodir.config

        real = os.access

        def access(p: object, mode: int, *args: object, **kwargs: object) -> bool:
            if Path(str(p)) == path and mode & os.R_OK:
                return False
            return real(p, mode, *args, **kwargs)  # type: ignore[arg-type]

        original = monodir.config.os.access
        monodir.config.os.access = access  # type: ignore[assignment]
        try:
            yield
        finally:
            monodir.config.os.access = original  # type: ignore[assignment]

    return Run(_config(tmp, inputs), patch=no_read if os.geteuid() == 0 else None)


def _real_contour_mask(tmp: Path) -> Run:
    out = tmp / "out"
    cfg = write_config(
        tmp / "run.yaml", {"map": REAL_MAP, "mask": REAL_CONTOUR_MASK}, out, n_workers=1
    )
    return Run(cfg)


def _bad_yaml(tmp: Path) -> Run:
    path = tmp / "run.yaml"
    path.write_text("input:\n  map: [unclosed\n  mask: m.mrc\n")
    return Run(path)


SLURM = [
    "cluster.kind=slurm",
    "cluster.n_workers=null",
    "cluster.threads_per_worker=null",
    "cluster.cores=1",
]

CASES: list[Case] = [
    Case(
        "map_missing",
        "map file does not exist",
        _sets("input.map={tmp}/data/nope.mrc"),
        ("input.map", "nope.mrc", "file not found"),
    ),
    Case(
        "map_unreadable",
        "map file not readable (permissions)",
        _unreadable,
        ("input.map", "map.mrc", "permission denied", "chmod"),
    ),
    Case(
        "map_is_directory",
        "a directory given as the map",
        _sets("input.map={tmp}/data"),
        ("input.map", "not a regular file"),
    ),
    Case(
        "map_truncated",
        "map file cut short (interrupted download)",
        lambda t: _with_map(t, _truncated),
        ("truncated.mrc", "not a readable MRC"),
    ),
    Case(
        "map_not_mrc",
        "a text file named .mrc",
        lambda t: _with_map(t, _text),
        ("notes.mrc", "not a readable MRC"),
    ),
    Case(
        "map_nan",
        "map with a NaN voxel",
        lambda t: _with_map(t, _nan_map),
        ("nan_map.mrc", "1 NaN", "replace them"),
    ),
    Case(
        "mask_inf",
        "mask with an Inf voxel",
        lambda t: _with_mask(t, _inf_mask),
        ("inf_mask.mrc", "Inf"),
    ),
    Case(
        "mask_not_binary",
        "soft (non-binary) mask, no threshold",
        lambda t: _with_mask(t, _soft_mask),
        ("soft_mask.mrc", "not binary", "input.mask_threshold"),
    ),
    Case(
        "mask_empty",
        "mask with no voxel set",
        lambda t: _with_mask(t, _empty_mask),
        ("empty_mask.mrc", "empty"),
    ),
    Case(
        "mask_threshold_selects_nothing",
        "input.mask_threshold above every mask value",
        _sets("input.mask_threshold=5"),
        ("mask.mrc", "mask threshold", "lower input.mask_threshold"),
    ),
    Case(
        "mask_other_box",
        "mask on a different box",
        lambda t: _with_mask(t, _mask_other_box),
        ("mask_30.mrc", "map.mrc", "30x30x32", "resample"),
    ),
    Case(
        "mask_real_contour_mask",
        "EMD-3488 with its 91x91x100 contour mask",
        _real_contour_mask,
        ("emd_3488_contour_mask.mrc", "emd_3488.mrc", "91x91x100", "100x100x100"),
        needs_data=True,
    ),
    Case(
        "mask_other_voxel_size",
        "mask header 2.5 Å/voxel, map 2 Å/voxel",
        lambda t: _with_mask(t, _mask_other_voxel_size),
        ("mask_2.5A.mrc", "map.mrc", "2.5", "input.voxel_size"),
    ),
    Case(
        "half_maps_other_box",
        "half maps on different boxes",
        lambda t: _half_maps(t, _half2_other_box),
        ("half2_36.mrc", "half1.mrc", "36x36x36"),
    ),
    Case(
        "half_maps_other_voxel_size",
        "half maps with different voxel sizes",
        lambda t: _half_maps(t, _half2_other_voxel_size),
        ("half2_2.2A.mrc", "half1.mrc", "voxel size"),
    ),
    Case(
        "half_maps_identical",
        "the same half map twice (two files)",
        lambda t: _half_maps(t, _half2_identical),
        ("half1.mrc", "half2_copy_of_half1.mrc", "identical"),
    ),
    Case(
        "map_no_voxel_size",
        "header voxel size 0, input.voxel_size not set",
        lambda t: _with_map(t, _no_voxel_size),
        ("no_pixel_size.mrc", "no voxel size", "input.voxel_size"),
    ),
    Case(
        "map_anisotropic_voxels",
        "header voxel size 2 x 2 x 2.4 Å",
        lambda t: _with_map(t, _anisotropic),
        ("anisotropic.mrc", "anisotropic", "resample"),
    ),
    Case(
        "map_bad_axis_order",
        "MAPC/MAPR/MAPS = 1,1,3",
        lambda t: _with_map(t, _bad_axes),
        ("bad_axes.mrc", "MAPC/MAPR/MAPS"),
    ),
    Case(
        "map_complex",
        "complex-valued map (MRC mode 4)",
        lambda t: _with_map(t, _complex),
        ("complex.mrc", "mode 4"),
    ),
    Case(
        "map_2d",
        "a single 2D image",
        lambda t: _with_map(t, _image),
        ("image.mrc", "2D"),
    ),
    Case(
        "map_not_cubic",
        "32x32x40 map and mask",
        _not_cubic,
        ("map_32x32x40.mrc", "not cubic", "pad it to 40x40x40"),
    ),
    Case(
        "box_tiny",
        "12³ box",
        _tiny_box,
        ("map_12.mrc", "too small", "at least 16"),
    ),
    Case(
        "box_too_small_for_sweep",
        "sweep start (40 Å) too coarse for a 32-voxel, 2 Å box",
        _sets("monores.low_resolution=40"),
        ("map.mrc", "monores.low_resolution", "at most 32 A"),
    ),
    Case(
        "sweep_beyond_nyquist",
        "sweep start (3 Å) finer than Nyquist (4 Å)",
        _sets("monores.low_resolution=3"),
        ("map.mrc", "monores.low_resolution", "Nyquist"),
    ),
    Case(
        "mask_leaves_no_noise",
        "single map, mask reaching the box edge",
        lambda t: _with_mask(t, _mask_too_large),
        ("big_mask.mrc", "at least 7 voxels of solvent", "input.half_maps"),
    ),
    Case(
        "memory_slurm_job",
        "SLURM job memory 64 MiB for the run",
        _sets(*SLURM, "cluster.memory=64MiB"),
        ("needs about", "GiB per worker", "cluster.memory", "cluster.processes"),
    ),
    Case(
        "memory_local_workers",
        "100000 local workers share this machine's memory",
        _sets("cluster.n_workers=100000"),
        ("needs about", "GiB per worker", "cluster.n_workers to at most"),
    ),
    Case(
        "config_bad_memory_string",
        "cluster.memory: lots (SLURM)",
        _sets(*SLURM, "cluster.memory=lots"),
        ("cluster.memory", "lots", "16GiB"),
    ),
    Case(
        "config_bad_scheduler_address",
        "cluster.scheduler: nonsense (kind: address)",
        _sets(
            "cluster.kind=address",
            "cluster.n_workers=null",
            "cluster.threads_per_worker=null",
            "cluster.scheduler=nonsense",
        ),
        ("cluster.scheduler", "nonsense", "tcp://host:8786"),
    ),
    Case(
        "config_unknown_key",
        "misspelt key monores.gaussain",
        _sets("monores.gaussain=true"),
        ("monores.gaussain", "unknown key"),
    ),
    Case(
        "config_wrong_type",
        "directional.fast: maybe",
        _sets("directional.fast=maybe"),
        ("directional.fast", "true or false"),
    ),
    Case(
        "config_negative_voxel_size",
        "input.voxel_size: -1",
        _sets("input.voxel_size=-1"),
        ("input.voxel_size", "> 0"),
    ),
    Case(
        "config_no_mask",
        "input.mask missing",
        _sets("input.mask=null"),
        ("input.mask", "required"),
    ),
    Case(
        "config_not_yaml",
        "config file with a YAML syntax error",
        _bad_yaml,
        ("run.yaml", "not valid YAML"),
    ),
]


# --------------------------------------------------------------------------------------------
# running a case
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Exit status and output of one case, and the files before and after."""

    status: int
    stderr: str
    stdout: str
    before: dict[str, int]
    after: dict[str, int]


def _args(command: str, run: Run) -> list[str]:
    args = [command, str(run.config)]
    for s in run.sets:
        args += ["--set", s]
    return args


def run_case(case: Case, tmp: Path, command: str = "run") -> Outcome:
    """Build ``case`` under ``tmp`` and run ``monodir COMMAND`` on it, in this process.

    Only what :func:`monodir.cli.main` prints is captured (log records go to the handler
    the CLI installed the first time it ran).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    run = case.build(tmp)
    before = tree(tmp)
    err, out = io.StringIO(), io.StringIO()
    patch = run.patch() if run.patch is not None else contextlib.nullcontext()
    with patch, contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main(_args(command, run))
    return Outcome(status, err.getvalue(), out.getvalue(), before, tree(tmp))


def run_case_subprocess(case: Case, tmp: Path, command: str = "run") -> Outcome:
    """As :func:`run_case`, through ``python -m monodir`` (the complete stderr)."""
    tmp.mkdir(parents=True, exist_ok=True)
    run = case.build(tmp)
    if run.patch is not None:  # needs a patch in this process (unreadable file as root)
        return run_case(case, tmp, command)
    before = tree(tmp)
    proc = run_cli(_args(command, run), timeout=300)
    return Outcome(proc.returncode, proc.stderr, proc.stdout, before, tree(tmp))


def error_line(stderr: str) -> str:
    """The single ``monodir: error:`` line (asserts there is exactly one, and it is last)."""
    lines = stderr.splitlines()
    errors = [ln for ln in lines if ln.startswith("monodir: error: ")]
    assert len(errors) == 1, stderr
    assert lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


def _skip_without_data(case: Case) -> None:
    if case.needs_data and not REAL_MAP.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"shared test data missing: {REAL_MAP}")
        pytest.skip(f"shared test data missing: {REAL_MAP}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_one_line_and_nothing_written(tmp_path, case):
    _skip_without_data(case)
    lines = {}
    for command in ("run", "validate"):
        where = tmp_path / command
        outcome = run_case(case, where, command)
        assert outcome.status == 2, outcome.stderr
        line = error_line(outcome.stderr)
        for text in case.expect:
            assert text in line, f"{text!r} not in {line!r}"
        assert not (where / "out").exists(), "the output directory was created"
        assert outcome.after == outcome.before, "files were written or changed"
        assert outcome.stdout == ""
        lines[command] = line.replace(str(where), "<dir>")
    assert lines["run"] == lines["validate"]


def test_unreachable_scheduler_is_one_line(tmp_path, capsys):
    """Only found when connecting, after the run store was created: still one line and
    status 2, and the same command resumes once the scheduler is there."""
    import dask

    inputs, out = _base(tmp_path)
    cfg = _config(tmp_path, inputs)
    sets = [
        "cluster.kind=address",
        "cluster.n_workers=null",
        "cluster.threads_per_worker=null",
        "cluster.scheduler=tcp://127.0.0.1:1",
    ]
    args = ["run", str(cfg)] + [a for s in sets for a in ("--set", s)]
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert main(args) == 2
    line = error_line(capsys.readouterr().err)
    assert "cluster.scheduler: cannot reach a Dask scheduler at tcp://127.0.0.1:1" in line
    from monodir.io.store import RunStore

    assert RunStore.open(out / "run.zarr", mode="r").status == "running"
    assert not [p for p in out.iterdir() if p.suffix in (".mrc", ".json", ".html")]


def test_every_case_is_in_the_reliability_doc():
    text = DOC.read_text(encoding="utf-8")
    missing = [c.id for c in CASES if f"| `{c.id}` |" not in text]
    assert not missing, f"regenerate docs/reliability.md (python {__file__}): {missing}"


def test_mask_voxel_size_mismatch_is_accepted_when_voxel_size_is_set(tmp_path, capsys):
    """input.voxel_size applies to every file: the mask's header is then only a warning."""
    inputs, _ = _base(tmp_path)
    mask = _mask_other_voxel_size(tmp_path / "data", inputs)
    cfg = _config(tmp_path, {**inputs, "mask": mask})
    assert main(["validate", str(cfg), "--set", "input.voxel_size=2.0"]) == 0
    out = capsys.readouterr().out
    assert "header voxel size 2.5 x 2.5 x 2.5 A ignored" in out


def test_mask_without_voxel_size_takes_the_maps(tmp_path, capsys):
    inputs, _ = _base(tmp_path)
    mask = write_mrc(tmp_path / "data" / "mask_0A.mrc", read(inputs["mask"]), voxel_size=0.0)
    cfg = _config(tmp_path, {**inputs, "mask": mask})
    assert main(["validate", str(cfg)]) == 0
    assert "no voxel size in the header; using the map's" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# axis order, end to end
# --------------------------------------------------------------------------------------------


def test_axis_order_zyx_file_gives_the_same_outputs(tmp_path):
    """The map and mask stored with MAPC/MAPR/MAPS = 3,2,1 (sections along x, columns along
    z; the array transposed accordingly) give the same outputs as stored x,y,z: nothing is
    mirrored or transposed."""
    from test_pipeline_local import _run

    inputs = make_inputs(tmp_path / "xyz", n=32, origin=(0.0, 0.0, 0.0))
    zyx: dict[str, Path] = {}
    (tmp_path / "zyx").mkdir()
    for key, path in inputs.items():
        data = read(path)  # [z, y, x]
        zyx[key] = write_mrc(
            tmp_path / "zyx" / path.name,
            np.ascontiguousarray(data.transpose(2, 1, 0)),  # [x, y, z]: sections run along x
            mapc=3,
            mapr=2,
            maps=1,
        )
    with mrcfile.open(str(zyx["map"])) as mrc:
        assert (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps)) == (3, 2, 1)
        assert not np.array_equal(np.asarray(mrc.data), read(inputs["map"]))

    out_xyz = _run(write_config(tmp_path / "xyz.yaml", inputs, tmp_path / "out_xyz"))
    out_zyx = _run(write_config(tmp_path / "zyx.yaml", zyx, tmp_path / "out_zyx"))
    assert_same_outputs(out_xyz, out_zyx)


# --------------------------------------------------------------------------------------------
# docs/reliability.md
# --------------------------------------------------------------------------------------------


def _normalise(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "<dir>").replace(str(DATA), "<shared>/data")
    return re.sub(r"pid \d+ on \S+", "pid N on HOST", text)


def markdown_table() -> str:
    """Run every case and return the table of ``docs/reliability.md``."""
    import tempfile

    rows = [
        "| case | bad input | exit status | message (stderr; `<dir>` = the run's folder) |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for case in CASES:
            if case.needs_data and not REAL_MAP.exists():
                continue
            where = tmp / case.id
            outcome = run_case_subprocess(case, where, "run")
            assert outcome.after == outcome.before, case.id
            text = " <br> ".join(
                _normalise(line, where).replace("|", "\\|") for line in outcome.stderr.splitlines()
            )
            rows.append(f"| `{case.id}` | {case.what} | {outcome.status} | `` {text} `` |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
