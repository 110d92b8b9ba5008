"""Result containers returned by the numerical kernels.

Plain dataclasses of numpy arrays: no Dask, no files. Tables are ``dict[str, np.ndarray]``
(column name -> 1-D array, all columns of equal length) so that they convert to STAR, CSV or
pandas without the kernels depending on any of those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Table = dict[str, np.ndarray]


@dataclass
class MonoResResult:
    """Output of :func:`monodir.monores`.

    Attributes
    ----------
    resolution
        Local resolution map in Å, shape of the input, 0 outside the refined mask
        (Xmipp's ``monoresResolutionMap``).
    chimera
        Smoothed resolution map for surface colouring (Xmipp's ``monoresResolutionChimera``).
    refined_mask
        Boolean map of the voxels that received a resolution.
    resolutions
        The resolutions actually tested, in sweep order (Å).
    stats
        Per tested frequency: ``resolution``, ``frequency``, ``mean_signal``, ``var_signal``,
        ``n_signal``, ``mean_noise``, ``var_noise``, ``n_noise``, ``threshold``, ``z``.
    voxel_size
        Å per voxel.
    stop_reason
        Why the sweep ended (human-readable).
    """

    resolution: np.ndarray
    chimera: np.ndarray
    refined_mask: np.ndarray
    resolutions: np.ndarray
    stats: Table
    voxel_size: float
    stop_reason: str = ""

    @property
    def median(self) -> float:
        """Median resolution (Å) over the refined mask."""
        vals = self.resolution[self.refined_mask]
        return float(np.median(vals)) if vals.size else float("nan")


@dataclass
class DirectionalResult:
    """Output of :func:`monodir.directional`.

    Attributes
    ----------
    directions
        ``(D, 3)`` unit vectors ``(d_x, d_y, d_z)``; x is the fastest array axis.
    angles
        ``(D, 2)`` ``(rot, tilt)`` in degrees, as listed in the direction set.
    mask_indices
        Flat (C-order) indices of the analysed mask voxels, length ``Nmask``.
    resolution_matrix
        ``(D, Nmask)`` float32 per-direction resolution (Å) after outlier removal;
        rejected entries are ``-1`` (compat) or ``NaN`` (default).
    maps
        Named volumes (shape of the input, 0 outside the mask): ``radial``, ``azimuthal``,
        ``highest``, ``lowest``, ``doa`` (Å, half 17-83 % range), ``mean_doa`` (Å),
        ``anisotropy`` (dimensionless, [0, 1]), ``zscore``.
    thresholds
        ``radial_p90`` and ``azimuthal_p90`` (Å).
    radial_averages
        Table with ``radius`` (voxels) and, per map, mean and std per shell.
    preferred_directions
        Table per direction: ``rot``, ``tilt``, ``count``, ``mean_resolution``.
    direction_means
        ``(D,)`` mean resolution of each direction over the mask (Å).
    anisotropy_axis
        Unit vector of the fitted worst-resolved axis (principal axis of
        ``sum_i w_i d_i d_i^T``, ``w_i = direction_means_i - min``).
    axis_angle_to_z
        Angle (degrees, 0-90) between ``anisotropy_axis`` and z.
    voxel_size
        Å per voxel.
    extra
        Free-form additional outputs (e.g. per-direction sweep logs, global directional FSC).
    """

    directions: np.ndarray
    angles: np.ndarray
    mask_indices: np.ndarray
    resolution_matrix: np.ndarray
    maps: dict[str, np.ndarray]
    thresholds: dict[str, float]
    radial_averages: Table
    preferred_directions: Table
    direction_means: np.ndarray
    anisotropy_axis: np.ndarray
    axis_angle_to_z: float
    voxel_size: float
    extra: dict = field(default_factory=dict)
