"""Direction-set geometry (algorithm.md 2.3)."""

from __future__ import annotations

import itertools

import numpy as np

from monodir.core.directions import angles_to_vectors, canonical_angles, direction_set


def _nearest_folded_angles(v: np.ndarray) -> np.ndarray:
    d = np.abs(v @ v.T)
    np.fill_diagonal(d, 0)
    return np.degrees(np.arccos(np.clip(d.max(axis=1), -1, 1)))


def _icosahedron_edge_points(freq: int) -> np.ndarray:
    """Icosahedron vertices plus the points dividing each edge into ``freq`` equal arcs."""
    p = (1 + 5**0.5) / 2
    verts = np.array(
        [
            (-1, p, 0),
            (1, p, 0),
            (-1, -p, 0),
            (1, -p, 0),
            (0, -1, p),
            (0, 1, p),
            (0, -1, -p),
            (0, 1, -p),
            (p, 0, -1),
            (p, 0, 1),
            (-p, 0, -1),
            (-p, 0, 1),
        ],
        dtype=float,
    )
    verts /= np.linalg.norm(verts, axis=1)[:, None]
    d = verts @ verts.T
    edge = d[0][d[0] < 0.999].max()
    pts = [*verts]
    for a, b in itertools.combinations(range(12), 2):
        if np.isclose(d[a, b], edge):
            omega = np.arccos(d[a, b])
            for k in range(1, freq):
                t = k / freq
                q = np.sin((1 - t) * omega) * verts[a] + np.sin(t * omega) * verts[b]
                pts.append(q / np.sin(omega))
    return np.array(pts)


def _align_pole(points: np.ndarray) -> np.ndarray:
    """Rotate so that one icosahedron vertex is +z and a neighbour lies at rot = 0."""
    z = points[0]
    ref = points[1] - np.dot(points[1], z) * z
    x = ref / np.linalg.norm(ref)
    y = np.cross(z, x)
    return points @ np.stack([x, y, z]).T


def test_full_set_geometry():
    v = angles_to_vectors(direction_set())
    assert v.shape == (81, 3)
    assert np.allclose(np.linalg.norm(v, axis=1), 1)
    assert (v[:, 2] >= -1e-12).all()
    folded = np.abs(v @ v.T)
    np.fill_diagonal(folded, 0)
    assert folded.max() < 0.999  # 81 distinct axes
    nn = _nearest_folded_angles(v)
    assert nn.min() > 15.8 and nn.max() < 17.2


def test_fast_set_geometry_and_compat_duplicate():
    v = angles_to_vectors(direction_set(fast=True))
    assert v.shape == (46, 3)
    folded = np.abs(v @ v.T)
    np.fill_diagonal(folded, 0)
    assert folded.max() < 0.999
    nn = _nearest_folded_angles(v)
    assert nn.min() > 20.4 and nn.max() < 22.6
    compat = direction_set(fast=True, xmipp_compat=True)
    assert compat.shape == (47, 2)
    assert np.array_equal(compat[0], compat[1])


def test_sets_contain_the_geodesic_icosphere_skeleton():
    """Icosahedron vertices and equal-arc edge points of a freq-4 / freq-3 icosphere.

    The tables are only defined up to a rotation of the sphere, so compare the sets of
    pairwise folded angles' structure via the canonical orientation: +z is a vertex, and the
    tilt step along the edges from the pole is atan(2)/freq.
    """
    for freq, table in ((4, direction_set()), (3, direction_set(fast=True))):
        v = angles_to_vectors(table)
        tilts = np.degrees(np.arccos(np.clip(v[:, 2], -1, 1)))
        step = np.degrees(np.arctan(2.0)) / freq
        for k in range(1, freq + 1):
            assert np.isclose(tilts, k * step, atol=2e-4).sum() >= 5
        skeleton = _icosahedron_edge_points(freq)
        assert len(skeleton) == 12 + 30 * (freq - 1)
        # every skeleton axis has a table direction within a few degrees after aligning
        # the icosahedron's pole with +z and rotating about z over a fine grid
        sk = _align_pole(skeleton)
        best = 0.0
        for rot in np.radians(np.arange(0.0, 72.0, 0.5)):
            c, s_ = np.cos(rot), np.sin(rot)
            rz = sk @ np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]]).T
            score = np.abs(rz @ v.T).max(axis=1).min()
            best = max(best, score)
        assert best > np.cos(np.radians(0.6))


def test_canonical_angles_keep_the_direction():
    a = direction_set()
    c = canonical_angles(a)
    assert (c[:, 1] >= 0).all()
    assert np.allclose(angles_to_vectors(a), angles_to_vectors(c), atol=1e-12)


def test_compare_angle_equals_the_angle_definition():
    """Deciding from the cosine gives what comparing the angle gives, ties and NaN included."""
    import math

    from monodir.core.directions import compare_angle

    def deg(c):
        return np.degrees(np.arccos(c))

    rng = np.random.default_rng(0)
    for limit in (15.0, 45.0, 70.0, 135.0):
        c_lim = math.cos(math.radians(limit))
        # random cosines, values at and one ulp around the limit, exact geometric ties
        # (p = (1, 0, 1) against z is exactly 45 degrees), out-of-range and NaN
        ties = np.array([c_lim, np.nextafter(c_lim, 2), np.nextafter(c_lim, -2), 1 / math.sqrt(2)])
        cos_v = np.concatenate(
            [rng.uniform(-1, 1, 5000), ties, [1.0, -1.0, 1.0 + 1e-15, -1.0 - 1e-15, np.nan]]
        )
        with np.errstate(invalid="ignore"):
            ang = deg(cos_v)
        for op, want in (
            ("<", ang < limit),
            ("<=", ang <= limit),
            (">", ang > limit),
            (">=", ang >= limit),
        ):
            got = compare_angle(cos_v, op, limit, deg, c_lim)
            np.testing.assert_array_equal(got, want, err_msg=f"{op} {limit}")
