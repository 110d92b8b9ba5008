"""Reports: tables (STAR/CSV), summary JSON, figures, HTML report, ChimeraX scripts.

Everything here is a pure function of the result containers in :mod:`monodir.core.results`
(no Dask, no recomputation of maps). The public functions are re-exported lazily, so that
``import monodir.report`` does not import matplotlib until a figure is drawn::

    from monodir.report import write_all_tables, build_summary, write_summary
    from monodir.report import make_all_figures, write_report, write_chimerax_script
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "write_all_tables": "tables",
    "build_summary": "summary",
    "write_summary": "summary",
    "make_all_figures": "plots",
    "figure_names": "plots",
    "write_report": "html",
    "write_chimerax_script": "chimerax",
    "resolution_map_ranges": "chimerax",
    "suggest_level": "chimerax",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
