"""Direction sets and cone geometry of the directional analysis.

Direction ``(rot, tilt)`` in degrees is the unit vector
``d = (sin(tilt) cos(rot), sin(tilt) sin(rot), cos(tilt))`` with ``d_x`` along the fastest array
axis (algorithm.md 0.4).

``ICOSPHERE_81``: one member of each antipodal pair of the vertices of a frequency-4 geodesic
icosphere (162 vertices), in the order and with the rounded angle values that Xmipp's MonoDir
enumerates, so that per-direction tables line up with Xmipp's. ``ICOSPHERE_46``: likewise for a
frequency-3 icosphere (92 vertices). Xmipp's fast table repeats +z (quirk Q16); compat mode
reproduces that with :func:`direction_set`. The geometry is checked in the tests against an
icosphere built from scratch.
"""

from __future__ import annotations

import numpy as np

ICOSPHERE_81: tuple[tuple[float, float], ...] = (
    (0, 0),
    (36, 15.8587),
    (36, 31.7175),
    (36, 47.5762),
    (36, 63.435),
    (62.4943, -76.5584),
    (54, 90),
    (45.5057, 76.5584),
    (108, 15.8587),
    (108, 31.7175),
    (108, 47.5762),
    (108, 63.435),
    (134.494, -76.5584),
    (126, 90),
    (117.506, 76.5584),
    (144, -15.8587),
    (144, -31.7175),
    (144, -47.5762),
    (144, -63.435),
    (170.494, 76.5584),
    (162, 90),
    (153.506, -76.5584),
    (72, -15.8587),
    (72, -31.7175),
    (72, -47.5762),
    (72, -63.435),
    (98.4943, 76.5584),
    (90, 90),
    (81.5057, -76.5584),
    (0, -15.8587),
    (0, -31.7175),
    (0, -47.5762),
    (0, -63.435),
    (26.4943, 76.5584),
    (18, 90),
    (9.50571, -76.5584),
    (12.811, 42.2347),
    (18.467, 59.6208),
    (0, 90),
    (8.86721, 75.2191),
    (72, 26.5651),
    (59.189, 42.2347),
    (84.811, 42.2347),
    (53.533, 59.6208),
    (72, 58.2825),
    (90.467, 59.6208),
    (72, 90),
    (63.1328, 75.2191),
    (80.8672, 75.2191),
    (144, 26.5651),
    (131.189, 42.2347),
    (156.811, 42.2347),
    (125.533, 59.6208),
    (144, 58.2825),
    (162.467, 59.6208),
    (144, 90),
    (135.133, 75.2191),
    (152.867, 75.2191),
    (180, -26.5651),
    (167.189, -42.2347),
    (180, -58.2825),
    (161.533, -59.6208),
    (171.133, -75.2191),
    (108, -26.5651),
    (120.811, -42.2347),
    (95.189, -42.2347),
    (126.467, -59.6208),
    (108, -58.2825),
    (89.533, -59.6208),
    (108, 90),
    (116.867, -75.2191),
    (99.1328, -75.2191),
    (36, -26.5651),
    (48.811, -42.2347),
    (23.189, -42.2347),
    (54.467, -59.6208),
    (36, -58.2825),
    (17.533, -59.6208),
    (36, 90),
    (44.8672, -75.2191),
    (27.1328, -75.2191),
)

ICOSPHERE_46: tuple[tuple[float, float], ...] = (
    (0, 0),
    (36, 21.145),
    (36, 42.29),
    (36, 63.435),
    (59.6043, -81.0207),
    (48.3957, 81.0207),
    (108, 21.145),
    (108, 42.29),
    (108, 63.435),
    (131.604, -81.0207),
    (120.396, 81.0207),
    (144, -21.145),
    (144, -42.29),
    (144, -63.435),
    (167.604, 81.0207),
    (156.396, -81.0207),
    (72, -21.145),
    (72, -42.29),
    (72, -63.435),
    (95.6043, 81.0207),
    (84.3957, -81.0207),
    (0, -21.145),
    (0, -42.29),
    (0, -63.435),
    (23.6043, 81.0207),
    (12.3957, -81.0207),
    (12.3756, 58.8818),
    (72, 36.349),
    (59.6244, 58.8818),
    (84.3756, 58.8818),
    (72, 80.2161),
    (144, 36.349),
    (131.624, 58.8818),
    (156.376, 58.8818),
    (144, 80.2161),
    (180, -36.349),
    (167.624, -58.8818),
    (180, -80.2161),
    (108, -36.349),
    (120.376, -58.8818),
    (95.6244, -58.8818),
    (108, -80.2161),
    (36, -36.349),
    (48.3756, -58.8818),
    (23.6244, -58.8818),
    (36, -80.2161),
)


#: The same two tables with the digits of Xmipp's source (6 decimals; the fast table 4), which
#: ``xmipp_compat`` uses: the values above are Xmipp's log print (6 significant digits), off by
#: up to 4e-4 degrees, enough to move a few voxels across the 45-degree noise cone.
XMIPP_ANGLES_81: tuple[tuple[float, float], ...] = (
    (0, 0),
    (36, 15.858741),
    (36, 31.717482),
    (36, 47.576224),
    (36, 63.434965),
    (62.494295, -76.558393),
    (54, 90),
    (45.505705, 76.558393),
    (108, 15.858741),
    (108, 31.717482),
    (108, 47.576224),
    (108, 63.434965),
    (134.494295, -76.558393),
    (126, 90),
    (117.505705, 76.558393),
    (144, -15.858741),
    (144, -31.717482),
    (144, -47.576224),
    (144, -63.434965),
    (170.494295, 76.558393),
    (162, 90),
    (153.505705, -76.558393),
    (72, -15.858741),
    (72, -31.717482),
    (72, -47.576224),
    (72, -63.434965),
    (98.494295, 76.558393),
    (90, 90),
    (81.505705, -76.558393),
    (0, -15.858741),
    (0, -31.717482),
    (0, -47.576224),
    (0, -63.434965),
    (26.494295, 76.558393),
    (18, 90),
    (9.505705, -76.558393),
    (12.811021, 42.234673),
    (18.466996, 59.620797),
    (0, 90),
    (8.867209, 75.219088),
    (72, 26.565058),
    (59.188979, 42.234673),
    (84.811021, 42.234673),
    (53.533003, 59.620797),
    (72, 58.282544),
    (90.466996, 59.620797),
    (72, 90),
    (63.132791, 75.219088),
    (80.867209, 75.219088),
    (144, 26.565058),
    (131.188979, 42.234673),
    (156.811021, 42.234673),
    (125.533003, 59.620797),
    (144, 58.282544),
    (162.466996, 59.620797),
    (144, 90),
    (135.132791, 75.219088),
    (152.867209, 75.219088),
    (180, -26.565058),
    (167.188979, -42.234673),
    (180, -58.282544),
    (161.533003, -59.620797),
    (171.132791, -75.219088),
    (108, -26.565058),
    (120.811021, -42.234673),
    (95.188979, -42.234673),
    (126.466996, -59.620797),
    (108, -58.282544),
    (89.533003, -59.620797),
    (108, 90),
    (116.867209, -75.219088),
    (99.132791, -75.219088),
    (36, -26.565058),
    (48.811021, -42.234673),
    (23.188979, -42.234673),
    (54.466996, -59.620797),
    (36, -58.282544),
    (17.533003, -59.620797),
    (36, 90),
    (44.867209, -75.219088),
    (27.132791, -75.219088),
)

XMIPP_ANGLES_46: tuple[tuple[float, float], ...] = (
    (0, 0),
    (36, 21.145),
    (36, 42.29),
    (36, 63.435),
    (59.6043, -81.0207),
    (48.3957, 81.0207),
    (108, 21.145),
    (108, 42.29),
    (108, 63.435),
    (131.6043, -81.0207),
    (120.3957, 81.0207),
    (144, -21.145),
    (144, -42.29),
    (144, -63.435),
    (167.6043, 81.0207),
    (156.3957, -81.0207),
    (72, -21.145),
    (72, -42.29),
    (72, -63.435),
    (95.6043, 81.0207),
    (84.3957, -81.0207),
    (0, -21.145),
    (0, -42.29),
    (0, -63.435),
    (23.6043, 81.0207),
    (12.3957, -81.0207),
    (12.3756, 58.8818),
    (72, 36.349),
    (59.6244, 58.8818),
    (84.3756, 58.8818),
    (72, 80.2161),
    (144, 36.349),
    (131.6244, 58.8818),
    (156.3756, 58.8818),
    (144, 80.2161),
    (180, -36.349),
    (167.6244, -58.8818),
    (180, -80.2161),
    (108, -36.349),
    (120.3756, -58.8818),
    (95.6244, -58.8818),
    (108, -80.2161),
    (36, -36.349),
    (48.3756, -58.8818),
    (23.6244, -58.8818),
    (36, -80.2161),
)


def angles_to_vectors(angles: np.ndarray) -> np.ndarray:
    """Unit vectors ``(D, 3)`` in (x, y, z) order from ``(D, 2)`` (rot, tilt) in degrees."""
    a = np.deg2rad(np.asarray(angles, dtype=np.float64))
    rot, tilt = a[:, 0], a[:, 1]
    return np.stack([np.sin(tilt) * np.cos(rot), np.sin(tilt) * np.sin(rot), np.cos(tilt)], axis=1)


def direction_set(fast: bool = False, *, xmipp_compat: bool = False) -> np.ndarray:
    """The ``(D, 2)`` (rot, tilt) table: 81 directions, or 46 in fast mode.

    With ``fast`` and ``xmipp_compat`` the +z direction is listed twice (47 rows), as Xmipp does
    (quirk Q16); the default lists each direction once. ``xmipp_compat`` takes the angles with
    all the digits of Xmipp's source (:data:`XMIPP_ANGLES_81`, :data:`XMIPP_ANGLES_46`).
    """
    if xmipp_compat:
        table = XMIPP_ANGLES_46 if fast else XMIPP_ANGLES_81
    else:
        table = ICOSPHERE_46 if fast else ICOSPHERE_81
    arr = np.array(table, dtype=np.float64)
    if fast and xmipp_compat:
        arr = np.vstack([arr[:1], arr])
    return arr


def canonical_angles(angles: np.ndarray) -> np.ndarray:
    """(rot, tilt) with tilt >= 0; a negative tilt becomes ``(rot + 180, |tilt|)``.

    rot ends up in [0, 360].
    """
    a = np.array(angles, dtype=np.float64, copy=True)
    neg = a[:, 1] < 0
    a[neg, 0] += 180.0
    a[neg, 1] = -a[neg, 1]
    a[:, 0] = np.where(a[:, 0] > 360.0, a[:, 0] - 360.0, a[:, 0])
    return a


def neighbour_pairs(vectors: np.ndarray, max_angle_deg: float, *, fold: bool) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i != j``, of directions closer than ``max_angle_deg``.

    With ``fold`` antipodes count as the same axis (``|d_i . d_j|``); without it the raw dot
    product is used, as Xmipp does (quirk Q3).
    """
    dots = vectors @ vectors.T
    if fold:
        dots = np.abs(dots)
    ang = np.degrees(np.arccos(np.clip(dots, -1.0, 1.0)))
    close = ang < max_angle_deg
    np.fill_diagonal(close, False)
    return np.argwhere(close)


def degrees_acos(c: np.ndarray) -> np.ndarray:
    """Angle in degrees of a cosine (the exact form :func:`compare_angle` falls back to)."""
    return np.degrees(np.arccos(c))


_ANGLE_OPS = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def compare_angle(cos_v: np.ndarray, op: str, limit: float, angle, cos_limit: float) -> np.ndarray:
    """``angle(cos_v) <op> limit`` decided mostly from the cosine.

    ``angle`` is the caller's exact, decreasing angle of a cosine (for example
    :func:`degrees_acos`) and ``cos_limit`` the cosine of ``limit``. Away from ``cos_limit``
    (by more than 1e-9) the answer follows from the cosine alone; within it,
    ``angle`` is evaluated, so exact ties classify as the definition does. A cosine outside
    ``[-1, 1]`` or NaN gives False, as a NaN angle would. The ``arccos`` calls drop from one
    per element to the few near the limit.
    """
    cos_v = np.asarray(cos_v)
    in_range = (cos_v >= -1.0) & (cos_v <= 1.0)
    if op in ("<", "<="):  # smaller angle: larger cosine
        out = in_range & (cos_v > cos_limit + 1e-9)
    else:
        out = in_range & (cos_v < cos_limit - 1e-9)
    near = np.flatnonzero(np.abs(cos_v - cos_limit) <= 1e-9)
    if near.size:
        with np.errstate(invalid="ignore"):
            out.reshape(-1)[near] = _ANGLE_OPS[op](angle(cos_v.reshape(-1)[near]), limit)
    return out
