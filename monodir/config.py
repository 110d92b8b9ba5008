"""Run configuration: YAML file + ``--set`` overrides -> validated, typed :class:`Config`.

The configuration has the sections ``input``, ``monores``, ``directional``, ``output``,
``cluster`` and ``run``, plus the top-level flag ``xmipp_compat``. Every mistake the user can
make (an unknown key, a wrong type, an impossible value, a missing file) raises
:class:`monodir.errors.InputError` whose message starts with the dotted key path, e.g.
``directional.resolution_step: must be > 0, got -0.5``.

Relative paths in a config file are resolved against the directory of that file, so a
config can travel with its data. Paths given on the command line with ``--set`` are resolved
against the current directory, as the shell user would expect.

The validation is written by hand over plain dataclasses (no pydantic) to keep the
dependency set small and to control the wording of every message.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from monodir.errors import InputError

__all__ = [
    "AdaptConfig",
    "ClusterConfig",
    "Config",
    "DirectionalConfig",
    "InputConfig",
    "MonoResConfig",
    "OutputConfig",
    "RunConfig",
    "apply_overrides",
    "config_from_dict",
    "default_config_yaml",
    "load_config",
    "parse_override",
]

# --------------------------------------------------------------------------------------------
# value converters: (key_path, raw value, base_dir) -> converted value, or InputError
# --------------------------------------------------------------------------------------------

Converter = Callable[[str, Any, Path], Any]

_NULL = "null"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _fail(key: str, message: str) -> InputError:
    return InputError(f"{key}: {message}")


def _conv_bool(key: str, value: Any, base: Path) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail(key, f"expected true or false, got {value!r} ({_type_name(value)})")


def _conv_number(
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    nullable: bool = False,
    integer: bool = False,
    allow: Iterable[float] = (),
) -> Converter:
    allowed = tuple(allow)

    def conv(key: str, value: Any, base: Path) -> Any:
        if value is None:
            if nullable:
                return None
            raise _fail(key, "a value is required (got null)")
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, f"expected {kind}, got {value!r} ({_type_name(value)})")
        if integer and not isinstance(value, int):
            if float(value).is_integer():
                value = int(value)
            else:
                raise _fail(key, f"expected {kind}, got {value!r}")
        if not integer:
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                raise _fail(key, f"must be finite, got {value!r}")
        if value in allowed:
            return value
        bounds = []
        if gt is not None and not value > gt:
            bounds.append(f"> {gt:g}")
        if ge is not None and not value >= ge:
            bounds.append(f">= {ge:g}")
        if lt is not None and not value < lt:
            bounds.append(f"< {lt:g}")
        if le is not None and not value <= le:
            bounds.append(f"<= {le:g}")
        if bounds:
            extra = f" (or {', '.join(f'{a:g}' for a in allowed)})" if allowed else ""
            raise _fail(key, f"must be {' and '.join(bounds)}{extra}, got {value!r}")
        return value

    return conv


def _conv_str(*, nullable: bool = False, choices: Iterable[str] | None = None) -> Converter:
    options = tuple(choices) if choices is not None else None

    def conv(key: str, value: Any, base: Path) -> Any:
        if value is None:
            if nullable:
                return None
            raise _fail(key, "a value is required (got null)")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _fail(key, f"expected a string, got {value!r} ({_type_name(value)})")
        value = str(value)
        if options is not None and value not in options:
            raise _fail(key, f"must be one of {', '.join(options)}; got {value!r}")
        return value

    return conv


def _conv_path(*, nullable: bool = True) -> Converter:
    def conv(key: str, value: Any, base: Path) -> Any:
        if value is None:
            if nullable:
                return None
            raise _fail(key, "a path is required (got null)")
        if isinstance(value, Path):
            path = value
        elif isinstance(value, str) and value.strip():
            path = Path(os.path.expandvars(value.strip())).expanduser()
        else:
            raise _fail(key, f"expected a path, got {value!r} ({_type_name(value)})")
        if not path.is_absolute():
            path = base / path
        return Path(os.path.normpath(path))

    return conv


def _conv_str_list(key: str, value: Any, base: Path) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value
    ):
        raise _fail(key, f"expected a list of strings, got {value!r}")
    return [str(v) for v in value]


def _conv_mapping(key: str, value: Any, base: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(key, f"expected a mapping, got {value!r} ({_type_name(value)})")
    return {str(k): copy.deepcopy(v) for k, v in value.items()}


def _conv_half_maps(key: str, value: Any, base: Path) -> tuple[Path, Path] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(key, f"expected a list of exactly two paths, got {value!r}")
    path = _conv_path(nullable=False)
    return (path(f"{key}[0]", value[0], base), path(f"{key}[1]", value[1], base))


def _opt(conv: Converter, *, path: bool = False) -> dict[str, Any]:
    return {"conv": conv, "path": path}


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


@dataclass
class InputConfig:
    """``input``: the map (or two half maps), the mask and how to read them."""

    map: Path | None = field(default=None, metadata=_opt(_conv_path(), path=True))
    half_maps: tuple[Path, Path] | None = field(
        default=None, metadata=_opt(_conv_half_maps, path=True)
    )
    mask: Path | None = field(default=None, metadata=_opt(_conv_path(), path=True))
    mask_threshold: float | None = field(default=None, metadata=_opt(_conv_number(nullable=True)))
    voxel_size: float | None = field(default=None, metadata=_opt(_conv_number(gt=0, nullable=True)))
    premasked: bool = field(default=False, metadata=_opt(_conv_bool))
    sphere_radius: float = field(default=-1.0, metadata=_opt(_conv_number(gt=0, allow=(-1,))))
    exclusion_mask: Path | None = field(default=None, metadata=_opt(_conv_path(), path=True))

    def _check(self, prefix: str) -> None:
        if self.map is not None and self.half_maps is not None:
            raise _fail(prefix, "give either input.map or input.half_maps, not both")
        if self.map is None and self.half_maps is None:
            raise _fail(f"{prefix}.map", "required (or give input.half_maps: [half1, half2])")
        if self.mask is None:
            raise _fail(f"{prefix}.mask", "required: the binary protein mask (an MRC file)")
        if self.half_maps is not None and self.half_maps[0] == self.half_maps[1]:
            raise _fail(f"{prefix}.half_maps", "the two half maps are the same file")

    @property
    def files(self) -> dict[str, Path]:
        """Input files by key path (``input.map``, ``input.half_maps[0]``, ...)."""
        out: dict[str, Path] = {}
        if self.map is not None:
            out["input.map"] = self.map
        if self.half_maps is not None:
            out["input.half_maps[0]"] = self.half_maps[0]
            out["input.half_maps[1]"] = self.half_maps[1]
        if self.mask is not None:
            out["input.mask"] = self.mask
        if self.exclusion_mask is not None:
            out["input.exclusion_mask"] = self.exclusion_mask
        return out


@dataclass
class MonoResConfig:
    """``monores``: the isotropic local-resolution pass."""

    low_resolution: float = field(default=18.0, metadata=_opt(_conv_number(gt=0)))
    step: float = field(default=0.25, metadata=_opt(_conv_number(gt=0)))
    significance: float = field(default=0.95, metadata=_opt(_conv_number(gt=0, lt=1)))
    gaussian: bool = field(default=False, metadata=_opt(_conv_bool))
    noise_only_in_halves: bool = field(default=False, metadata=_opt(_conv_bool))


@dataclass
class DirectionalConfig:
    """``directional``: the per-direction (MonoDir) pass."""

    fast: bool = field(default=False, metadata=_opt(_conv_bool))
    resolution_step: float = field(default=0.5, metadata=_opt(_conv_number(gt=0)))
    significance: float = field(default=0.95, metadata=_opt(_conv_number(gt=0, lt=1)))


@dataclass
class OutputConfig:
    """``output``: where the run directory goes."""

    directory: Path = field(
        default=Path("monodir_run"), metadata=_opt(_conv_path(nullable=False), path=True)
    )
    overwrite: bool = field(default=False, metadata=_opt(_conv_bool))


@dataclass
class AdaptConfig:
    """``cluster.adapt``: adaptive scaling bounds, in SLURM jobs."""

    minimum: int = field(default=0, metadata=_opt(_conv_number(ge=0, integer=True)))
    maximum: int = field(default=1, metadata=_opt(_conv_number(ge=1, integer=True)))

    def _check(self, prefix: str) -> None:
        if self.minimum > self.maximum:
            raise _fail(
                f"{prefix}.minimum",
                f"must be <= {prefix}.maximum ({self.maximum}), got {self.minimum}",
            )


CLUSTER_KINDS = ("local", "slurm", "address")
#: keys of ``cluster`` used by each kind (``kind`` and ``dashboard`` apply to all).
LOCAL_KEYS = ("n_workers", "threads_per_worker")
SLURM_KEYS = (
    "cores",
    "memory",
    "processes",
    "walltime",
    "queue",
    "account",
    "job_extra_directives",
    "interface",
    "worker_extra_args",
    "job_script_prologue",
    "local_directory",
    "log_directory",
    "scheduler_options",
    "python",
    "death_timeout",
    "jobs",
    "adapt",
)
ADDRESS_KEYS = ("scheduler",)


@dataclass
class ClusterConfig:
    """``cluster``: where the Dask workers come from.

    ``kind: local`` starts a ``distributed.LocalCluster`` on this machine; ``kind: slurm``
    a ``dask_jobqueue.SLURMCluster`` (keys as in dask-jobqueue, snake_case; unset keys fall
    back to ``~/.config/dask/jobqueue.yaml``); ``kind: address`` connects to a running
    scheduler.
    """

    kind: str = field(default="local", metadata=_opt(_conv_str(choices=CLUSTER_KINDS)))
    dashboard: str | None = field(default=":8787", metadata=_opt(_conv_str(nullable=True)))
    # local
    n_workers: int | None = field(
        default=None, metadata=_opt(_conv_number(ge=1, integer=True, nullable=True))
    )
    threads_per_worker: int | None = field(
        default=None, metadata=_opt(_conv_number(ge=1, integer=True, nullable=True))
    )
    # slurm (per job, as in dask-jobqueue)
    cores: int | None = field(
        default=None, metadata=_opt(_conv_number(ge=1, integer=True, nullable=True))
    )
    memory: str | None = field(default=None, metadata=_opt(_conv_str(nullable=True)))
    processes: int | None = field(
        default=None, metadata=_opt(_conv_number(ge=1, integer=True, nullable=True))
    )
    walltime: str | None = field(default=None, metadata=_opt(_conv_str(nullable=True)))
    queue: str | None = field(default=None, metadata=_opt(_conv_str(nullable=True)))
    account: str | None = field(default=None, metadata=_opt(_conv_str(nullable=True)))
    job_extra_directives: list[str] = field(default_factory=list, metadata=_opt(_conv_str_list))
    interface: str | None = field(default=None, metadata=_opt(_conv_str(nullable=True)))
    worker_extra_args: list[str] = field(default_factory=list, metadata=_opt(_conv_str_list))
    job_script_prologue: list[str] = field(default_factory=list, metadata=_opt(_conv_str_list))
    local_directory: str | None = field(default=None, metadata=_opt(_conv_str(nullable=True)))
    log_directory: Path | None = field(default=None, metadata=_opt(_conv_path(), path=True))
    scheduler_options: dict[str, Any] = field(default_factory=dict, metadata=_opt(_conv_mapping))
    python: str | None = field(default=None, metadata=_opt(_conv_str(nullable=True)))
    death_timeout: float | None = field(
        default=None, metadata=_opt(_conv_number(gt=0, nullable=True))
    )
    jobs: int | None = field(
        default=None, metadata=_opt(_conv_number(ge=1, integer=True, nullable=True))
    )
    adapt: AdaptConfig | None = field(default=None, metadata={"section": AdaptConfig})
    # address
    scheduler: str | None = field(default=None, metadata=_opt(_conv_str(nullable=True)))

    def _check(self, prefix: str) -> None:
        if self.kind == "address" and not self.scheduler:
            raise _fail(
                f"{prefix}.scheduler",
                "required with cluster.kind: address (e.g. tcp://host:8786)",
            )
        if self.jobs is not None and self.adapt is not None:
            raise _fail(f"{prefix}.jobs", "give either cluster.jobs or cluster.adapt, not both")


@dataclass
class RunConfig:
    """``run``: how the work is cut into tasks."""

    batch_size: int = field(default=1, metadata=_opt(_conv_number(ge=1, integer=True)))
    threads: int | None = field(
        default=None, metadata=_opt(_conv_number(ge=1, integer=True, nullable=True))
    )
    reduce_block: int = field(default=65536, metadata=_opt(_conv_number(ge=1, integer=True)))


_SECTIONS: dict[str, type] = {
    "input": InputConfig,
    "monores": MonoResConfig,
    "directional": DirectionalConfig,
    "output": OutputConfig,
    "cluster": ClusterConfig,
    "run": RunConfig,
}
_TOP_LEVEL_FLAGS = ("xmipp_compat",)


@dataclass
class Config:
    """The resolved configuration of one run.

    Attributes
    ----------
    input, monores, directional, output, cluster, run
        The sections (see the section classes).
    xmipp_compat
        Reproduce Xmipp's behaviour, quirks included.
    source
        The YAML file the config came from (``None`` when built from a dict).
    """

    input: InputConfig = field(default_factory=InputConfig)
    monores: MonoResConfig = field(default_factory=MonoResConfig)
    directional: DirectionalConfig = field(default_factory=DirectionalConfig)
    xmipp_compat: bool = False
    output: OutputConfig = field(default_factory=OutputConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    run: RunConfig = field(default_factory=RunConfig)
    source: Path | None = None

    # ---- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved config as plain YAML/JSON-serialisable data (paths as str)."""
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            out[name] = _section_to_dict(getattr(self, name))
        out["xmipp_compat"] = self.xmipp_compat
        return out

    def to_yaml(self) -> str:
        """Return :meth:`to_dict` as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def numeric_dict(self) -> dict[str, Any]:
        """Return the parts of the config that change the numbers.

        Used to decide whether an existing run directory can be resumed. File paths are
        left out on purpose: the run store compares the staged input data themselves.
        """
        inp = self.input
        return {
            "input": {
                "half_maps": inp.half_maps is not None,
                "mask_threshold": inp.mask_threshold,
                "voxel_size": inp.voxel_size,
                "premasked": inp.premasked,
                "sphere_radius": inp.sphere_radius,
                "exclusion_mask": inp.exclusion_mask is not None,
            },
            "monores": _section_to_dict(self.monores),
            "directional": _section_to_dict(self.directional),
            "xmipp_compat": self.xmipp_compat,
        }

    # ---- checks --------------------------------------------------------------------------

    def check_files(self) -> None:
        """Raise :class:`InputError` naming the key if an input file does not exist."""
        where = (
            f"relative paths are resolved against {self.source.parent}"
            if self.source is not None
            else "relative paths are resolved against the current directory"
        )
        for key, path in self.input.files.items():
            if not path.exists():
                raise _fail(key, f"file not found: {path}; check the path ({where})")
            if not path.is_file():
                raise _fail(key, f"not a regular file: {path}; give the path of an MRC map")
            if not os.access(path, os.R_OK):
                raise _fail(
                    key,
                    f"cannot read {path} (permission denied); make it readable "
                    f"(chmod a+r {path}) or copy it somewhere readable",
                )


def _section_to_dict(section: Any) -> Any:
    if section is None:
        return None
    out: dict[str, Any] = {}
    for f in fields(section):
        value = getattr(section, f.name)
        if "section" in f.metadata:
            out[f.name] = _section_to_dict(value)
        else:
            out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def _build_section(
    cls: type,
    raw: Any,
    prefix: str,
    base: Path,
    cwd_keys: set[str],
    checks: list[tuple[Callable[[str], None], str]],
) -> Any:
    """Convert one section; cross-field checks are queued in ``checks`` (run after all
    sections so that a plain type error anywhere is reported before a consistency error)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _fail(prefix, f"expected a mapping of keys, got {raw!r} ({_type_name(raw)})")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise _fail(
                f"{prefix}.{key}",
                f"unknown key (known keys in {prefix}: {', '.join(known)})",
            )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        key = f"{prefix}.{name}"
        if name not in raw:
            default = getattr(cls, name, None) if f.default_factory is MISSING else None
            if f.metadata.get("path") and isinstance(default, Path):
                kwargs[name] = f.metadata["conv"](key, default, base)
            continue
        if "section" in f.metadata:
            value = raw[name]
            kwargs[name] = (
                None
                if value is None
                else _build_section(f.metadata["section"], value, key, base, cwd_keys, checks)
            )
            continue
        here = Path.cwd() if key in cwd_keys else base
        kwargs[name] = f.metadata["conv"](key, raw[name], here)
    obj = cls(**kwargs)
    check = getattr(obj, "_check", None)
    if check is not None:
        checks.append((check, prefix))
    return obj


def config_from_dict(
    data: Mapping[str, Any] | None,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    source: Path | None = None,
    cwd_keys: Iterable[str] = (),
) -> Config:
    """Build and validate a :class:`Config` from plain data.

    Parameters
    ----------
    data
        Parsed YAML (a mapping of sections). ``None`` means all defaults.
    base_dir
        Directory against which relative paths are resolved (default: current directory).
    source
        The file the data came from, kept for provenance.
    cwd_keys
        Dotted keys whose relative paths are resolved against the current directory instead
        (the ones set on the command line).

    Returns
    -------
    Config

    Raises
    ------
    InputError
        Unknown key, wrong type or impossible value; the message starts with the key path.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(
            f"config: expected a mapping of sections at the top level, got {_type_name(data)}"
        )
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    base = base.resolve()
    keys = set(cwd_keys)
    for key in data:
        if key not in _SECTIONS and key not in _TOP_LEVEL_FLAGS:
            known = ", ".join([*_SECTIONS, *_TOP_LEVEL_FLAGS])
            raise _fail(str(key), f"unknown key (known top-level keys: {known})")
    kwargs: dict[str, Any] = {}
    checks: list[tuple[Callable[[str], None], str]] = []
    for name, cls in _SECTIONS.items():
        kwargs[name] = _build_section(cls, data.get(name), name, base, keys, checks)
    if "xmipp_compat" in data:
        kwargs["xmipp_compat"] = _conv_bool("xmipp_compat", data["xmipp_compat"], base)
    for check, prefix in checks:
        check(prefix)
    return Config(**kwargs, source=source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``section.key=value`` override; the value is parsed as YAML.

    Examples
    --------
    >>> parse_override("directional.fast=true")
    (['directional', 'fast'], True)
    >>> parse_override("input.half_maps=[a.mrc, b.mrc]")
    (['input', 'half_maps'], ['a.mrc', 'b.mrc'])
    """
    if "=" not in text:
        raise InputError(f"--set {text}: expected section.key=value")
    key, _, raw = text.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if not parts or any(not p for p in parts):
        raise InputError(f"--set {text}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise InputError(f"--set {text}: the value is not valid YAML ({exc})") from None
    return parts, value


def apply_overrides(data: Mapping[str, Any] | None, overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``section.key=value`` overrides applied."""
    if data is not None and not isinstance(data, Mapping):
        raise InputError(
            f"config: expected a mapping of sections at the top level, got {_type_name(data)}"
        )
    out: dict[str, Any] = copy.deepcopy(dict(data or {}))
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise InputError(f"--set {text}: {where} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config(
    path: str | os.PathLike[str],
    overrides: Iterable[str] = (),
    *,
    check_files: bool = True,
) -> Config:
    """Read a YAML config file, apply ``--set`` overrides and validate.

    Parameters
    ----------
    path
        The YAML file. Relative paths inside it are resolved against its directory.
    overrides
        ``section.key=value`` strings (values parsed as YAML; relative paths resolved
        against the current directory).
    check_files
        Also check that the input files exist.

    Returns
    -------
    Config

    Raises
    ------
    InputError
        Missing or unreadable file, invalid YAML, or any validation failure.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"config file not found: {path}")
    if not path.is_file():
        raise InputError(f"config file is not a regular file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = " ".join(str(exc).split())
        raise InputError(f"config file {path} is not valid YAML: {msg}") from None
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    cwd_keys = {".".join(parse_override(o)[0]) for o in overrides}
    config = config_from_dict(data, path.resolve().parent, source=path.resolve(), cwd_keys=cwd_keys)
    if check_files:
        config.check_files()
    return config


_DEFAULT_YAML = """\
# monodir configuration: directional local resolution (MonoRes + MonoDir).
# Relative paths are resolved against the directory of this file.
# Any key can be overridden on the command line: monodir run this.yaml --set section.key=value

input:
  map: data/map.mrc               # the map to analyse ...
  # half_maps: [data/half1.mrc, data/half2.mrc]   # ... or two half maps (not both)
  mask: data/mask.mrc             # protein mask (binary, or give mask_threshold)
  mask_threshold: null            # binarise a soft mask at this value; null = must be 0/1
  voxel_size: null                # Å/voxel; null = from the MRC header
  premasked: false                # the map was masked with a sphere before
  sphere_radius: -1               # voxels, used when premasked; -1 = half the box
  exclusion_mask: null            # optional: voxels to leave out of MonoRes

monores:
  low_resolution: 18.0            # Å, where the frequency sweep starts
  step: 0.25                      # Å between tested resolutions (>= 0.25 is used)
  significance: 0.95              # noise quantile of the threshold, in (0, 1)
  gaussian: false                 # Gaussian noise threshold instead of the empirical quantile
  noise_only_in_halves: false     # half maps: noise only from their difference, inside the mask

directional:
  fast: false                     # 46 directions instead of 81
  resolution_step: 0.5            # Å between tested resolutions below 8 Å
  significance: 0.95              # per-direction noise quantile, in (0, 1)

xmipp_compat: false               # reproduce Xmipp's numbers, quirks included

output:
  directory: monodir_run          # run directory: MRC maps, tables, report, run.zarr
  overwrite: false                # replace a finished run there (an interrupted one resumes)

cluster:
  kind: local                     # local | slurm | address
  dashboard: ":8787"              # Dask dashboard address (":0" = any free port, null = none)
  # --- kind: local ---
  n_workers: null                 # null = one worker per core
  threads_per_worker: null        # null = 1; FFT threads per task = worker threads
  # --- kind: slurm (per job; unset keys come from ~/.config/dask/jobqueue.yaml) ---
  # cores: 16
  # memory: 64GiB
  # processes: 1
  # walltime: "02:00:00"
  # queue: cpu
  # account: null
  # job_extra_directives: []
  # interface: null               # e.g. ib0
  # worker_extra_args: ["--lifetime", "55m", "--lifetime-stagger", "4m"]
  # job_script_prologue: []       # e.g. ["module load fftw"]
  # local_directory: null
  # log_directory: null
  # scheduler_options: {}
  # jobs: 2                       # fixed number of worker jobs, or:
  # adapt: {minimum: 0, maximum: 4}
  # --- kind: address ---
  # scheduler: tcp://host:8786

run:
  batch_size: 1                   # directions per task
  threads: null                   # FFT threads per task; null = the worker's threads
  reduce_block: 65536             # mask voxels per reduction task
"""


def default_config_yaml() -> str:
    """Return the commented default configuration (what ``monodir init-config`` writes)."""
    return _DEFAULT_YAML
