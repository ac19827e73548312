"""Procedurally generated closed racing tracks.

A track's centreline is a polar Fourier curve around the origin,

    r(theta) = R0 * (1 + sum_k a_k cos(k * theta + phi_k)),   k = 2..K,  r > 0,

which is star-shaped and so never self-intersects. Tracks whose corners are too tight for
the width (the inner boundary would fold over) or whose far-apart parts come too close
(the boundaries of two stretches would touch) are rejected and redrawn from the same
generator, so one seed always gives the same track.

The centreline is resampled to ``n_samples`` points equally spaced in arc length. Sample
``i`` sits at distance ``s[i] = i * ds`` from the start/finish line (sample 0); every
per-sample array below is indexed the same way and wraps around (sample ``n`` is sample 0).
Units are metres and radians; curvature is signed (positive = turning left, i.e. the
track runs counter-clockwise, so left is inward on convex stretches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["Track", "TrackSpec", "generate_track"]


@dataclass(frozen=True)
class TrackSpec:
    """Parameters of the track generator.

    Attributes:
        n_samples: centreline samples after arc-length resampling (all tracks share it,
            so many tracks stack into one ``(N, n_samples)`` array).
        half_width: half the road width in metres.
        radius_range: mean radius ``R0`` is drawn uniformly from this range (metres).
        length_range: tracks whose centreline length falls outside are redrawn (metres).
        harmonics: highest Fourier harmonic ``K`` (harmonics 2..K are used).
        roughness: total relative amplitude ``sum |a_k|`` (< 1 keeps ``r > 0``).
        min_corner_radius: tightest allowed corner radius in metres; also kept
            >= ``half_width / 0.4`` so the inner boundary never folds.
        min_separation: minimum distance, in half-widths, between centreline points that
            are far apart along the track.
    """

    n_samples: int = 128
    half_width: float = 5.0
    radius_range: tuple[float, float] = (45.0, 65.0)
    length_range: tuple[float, float] = (280.0, 480.0)
    harmonics: int = 6
    roughness: float = 0.45
    min_corner_radius: float = 12.0
    min_separation: float = 3.0

    @property
    def max_curvature(self) -> float:
        """Largest allowed ``|curvature|`` in 1/m."""
        return 1.0 / max(self.min_corner_radius, self.half_width / 0.4)


@dataclass(frozen=True, eq=False)
class Track:
    """A closed track resampled by arc length; every array is indexed by sample.

    Attributes:
        seed: generator seed (tracks are identified by it).
        xy: (M, 2) centreline points.
        tangent: (M, 2) unit tangents (direction of travel).
        normal: (M, 2) unit left normals.
        curvature: (M,) signed curvature in 1/m.
        s: (M,) distance from the start line in metres (``s[i] = i * ds``).
        length: total centreline length in metres.
        half_width: half the road width in metres.
        left: (M, 2) left boundary, ``xy + half_width * normal``.
        right: (M, 2) right boundary, ``xy - half_width * normal``.
    """

    seed: int
    xy: np.ndarray
    tangent: np.ndarray
    normal: np.ndarray
    curvature: np.ndarray
    s: np.ndarray
    length: float
    half_width: float
    left: np.ndarray = field(repr=False)
    right: np.ndarray = field(repr=False)

    @property
    def n_samples(self) -> int:
        return int(self.xy.shape[0])

    @property
    def ds(self) -> float:
        """Arc length between consecutive samples, in metres."""
        return self.length / self.n_samples

    def bounds(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """Axis-aligned box ``(xmin, ymin, xmax, ymax)`` around both boundaries."""
        pts = np.concatenate([self.left, self.right])
        lo = pts.min(axis=0) - margin
        hi = pts.max(axis=0) + margin
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


_N_DENSE = 513  # angle grid for the curvature check and the arc-length integral


@lru_cache(maxsize=8)
def _dense_basis(harmonics: int) -> tuple[np.ndarray, np.ndarray]:
    """The dense angle grid and ``exp(i k theta)`` on it, (K-1, N), computed once."""
    dense = np.linspace(0.0, 2.0 * np.pi, _N_DENSE)
    ks = np.arange(2, harmonics + 1, dtype=np.float64)
    return dense, np.exp(1j * ks[:, None] * dense[None, :])


def _polar(
    basis: np.ndarray, r0: float, amp: np.ndarray, phase: np.ndarray, ks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """r, r', r'' of the polar Fourier curve, given ``basis = exp(i k theta)`` (K-1, N).

    ``r = R0 (1 + Re sum_k a_k e^{i phi_k} e^{i k theta})``; each derivative multiplies the
    coefficient by ``i k``, so all three are one small complex matrix product.
    """
    c0 = amp * np.exp(1j * phase)
    coef = np.stack([c0, 1j * ks * c0, -(ks * ks) * c0])  # (3, K-1)
    r, dr, ddr = r0 * (coef @ basis).real
    return r + r0, dr, ddr


def _candidate(rng: np.random.Generator, spec: TrackSpec, seed: int) -> Track | None:
    """Draw one track; ``None`` if it breaks a constraint."""
    r0 = rng.uniform(*spec.radius_range)
    ks = np.arange(2, spec.harmonics + 1, dtype=np.float64)
    weights = rng.uniform(0.0, 1.0, ks.size) / ks**0.7
    amp = spec.roughness * rng.uniform(0.6, 1.0) * weights / weights.sum()
    phase = rng.uniform(0.0, 2.0 * np.pi, ks.size)

    # Curvature is parametrisation-free: reject on the dense grid before resampling.
    dense, basis = _dense_basis(spec.harmonics)
    r, dr, ddr = _polar(basis, r0, amp, phase, ks)
    speed = np.sqrt(r * r + dr * dr)  # |d(xy)/d(theta)|
    if np.abs((r * r + 2.0 * dr * dr - r * ddr) / speed**3).max() > spec.max_curvature:
        return None

    # Arc length theta -> s (trapezoid rule), inverted by interpolation.
    s_dense = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(dense))])
    length = float(s_dense[-1])
    if not spec.length_range[0] <= length <= spec.length_range[1]:
        return None
    m = spec.n_samples
    s = np.arange(m) * (length / m)
    theta = np.interp(s, s_dense, dense)

    # Exact geometry at the resampled angles (analytic derivatives, no finite differences).
    r, dr, ddr = _polar(np.exp(1j * ks[:, None] * theta[None, :]), r0, amp, phase, ks)
    ct, st = np.cos(theta), np.sin(theta)
    xy = np.stack([r * ct, r * st], axis=1)
    d_xy = np.stack([dr * ct - r * st, dr * st + r * ct], axis=1)
    norm = np.linalg.norm(d_xy, axis=1, keepdims=True)
    tangent = d_xy / norm
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    curvature = (r * r + 2.0 * dr * dr - r * ddr) / norm[:, 0] ** 3

    # Far-apart stretches must stay apart, or their boundaries would touch. Checked on every
    # other sample; the margin of one sample spacing keeps the test conservative.
    z = (xy[::2, 0] + 1j * xy[::2, 1]).astype(np.complex64)
    half = z.size
    gap = np.abs(np.arange(half)[:, None] - np.arange(half)[None, :])
    arc_gap = np.minimum(gap, half - gap) * (2.0 * length / m)
    far = arc_gap > np.pi * spec.min_separation * spec.half_width
    if (
        far.any()
        and np.abs(z[:, None] - z[None, :])[far].min()
        < spec.min_separation * spec.half_width + 2.0 * length / m
    ):
        return None

    hw = spec.half_width
    return Track(
        seed=seed,
        xy=xy,
        tangent=tangent,
        normal=normal,
        curvature=curvature,
        s=s,
        length=length,
        half_width=hw,
        left=xy + hw * normal,
        right=xy - hw * normal,
    )


def generate_track(seed: int, spec: TrackSpec | None = None, max_tries: int = 1000) -> Track:
    """Generate the track for ``seed`` (deterministic: same seed and spec, same track).

    Args:
        seed: any non-negative integer.
        spec: generator parameters (defaults to :class:`TrackSpec`).
        max_tries: candidates to draw before giving up.

    Raises:
        ValueError: if no candidate met the constraints (the spec is too strict).
    """
    spec = spec or TrackSpec()
    if spec.roughness >= 1.0:
        raise ValueError(
            f"roughness must be < 1 so the radius stays positive, got {spec.roughness}"
        )
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        track = _candidate(rng, spec, seed)
        if track is not None:
            return track
    raise ValueError(
        f"no valid track for seed {seed} after {max_tries} tries; relax the TrackSpec "
        f"(min_corner_radius={spec.min_corner_radius}, roughness={spec.roughness})"
    )
