"""monodir: directional local resolution and local anisotropy of cryo-EM maps.

The numerical entry points work on plain numpy arrays::

    import monodir
    mr = monodir.monores(volume, mask, voxel_size=1.05)
    dr = monodir.directional(volume, mask, voxel_size=1.05, monores_map=mr.resolution)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("monodir")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from monodir.core.results import DirectionalResult, MonoResResult

__all__ = ["DirectionalResult", "MonoResResult", "__version__", "directional", "monores"]


def monores(*args, **kwargs) -> MonoResResult:
    """Run MonoRes; see :func:`monodir.core.monores.monores`."""
    from monodir.core.monores import monores as _monores

    return _monores(*args, **kwargs)


def directional(*args, **kwargs) -> DirectionalResult:
    """Run the directional analysis; see :func:`monodir.core.directional.directional`."""
    from monodir.core.directional import directional as _directional

    return _directional(*args, **kwargs)
