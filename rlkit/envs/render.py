"""Top-down rendering of the racing env with numpy only (no display, no extra packages).

The whole track is fitted into a square frame. The static part (grass, road, edge lines,
start line) depends only on the track and the frame size, so it is drawn once and cached;
each frame then only paints the car, which keeps rendering cheap enough for pixel-based
world models (64x64) and videos.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from rlkit.envs.sim import RacingSim
from rlkit.envs.track import Track

__all__ = ["render_frame", "track_background"]

GRASS = np.array([62, 138, 58], dtype=np.uint8)
ROAD = np.array([96, 96, 100], dtype=np.uint8)
EDGE = np.array([235, 235, 235], dtype=np.uint8)
CAR = np.array([220, 30, 30], dtype=np.uint8)


def _frame_transform(track: Track, size: int) -> tuple[float, float, float]:
    """(x0, y0, metres per pixel) mapping pixel (row, col) centres to world points."""
    xmin, ymin, xmax, ymax = track.bounds(margin=2.0)
    scale = max(xmax - xmin, ymax - ymin) / size
    cx, cy = 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)
    return cx - 0.5 * size * scale, cy - 0.5 * size * scale, scale


def _pixel_world(size: int, x0: float, y0: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates of every pixel centre; row 0 is the top (largest y)."""
    cols = x0 + (np.arange(size) + 0.5) * scale
    rows = y0 + (size - np.arange(size) - 0.5) * scale
    wx, wy = np.meshgrid(cols, rows)
    return wx, wy


@lru_cache(maxsize=64)
def track_background(track: Track, size: int) -> np.ndarray:
    """The static image of ``track`` at ``size`` x ``size`` pixels, uint8 (H, W, 3)."""
    x0, y0, scale = _frame_transform(track, size)
    wx, wy = _pixel_world(size, x0, y0, scale)
    px, py = wx.ravel(), wy.ravel()
    a = track.xy
    e = np.roll(a, -1, axis=0) - a
    e2 = (e**2).sum(axis=1)
    dist = np.empty(px.size)
    along0 = np.empty(px.size)  # distance along the track at the start line
    across0 = np.empty(px.size)  # distance across the track at the start line
    chunk = 8192
    for lo in range(0, px.size, chunk):
        qx, qy = (
            px[lo : lo + chunk, None] - a[None, :, 0],
            py[lo : lo + chunk, None] - a[None, :, 1],
        )
        u = np.clip((qx * e[:, 0] + qy * e[:, 1]) / e2, 0.0, 1.0)
        d2 = (qx - u * e[:, 0]) ** 2 + (qy - u * e[:, 1]) ** 2
        dist[lo : lo + chunk] = np.sqrt(d2.min(axis=1))
        along0[lo : lo + chunk] = qx[:, 0] * track.tangent[0, 0] + qy[:, 0] * track.tangent[0, 1]
        across0[lo : lo + chunk] = qx[:, 0] * track.normal[0, 0] + qy[:, 0] * track.normal[0, 1]
    hw = track.half_width
    line = max(0.4, 0.6 * scale)  # line width in metres, at least ~half a pixel
    road = dist <= hw
    img = np.empty((px.size, 3), dtype=np.uint8)
    img[:] = GRASS
    img[road] = ROAD
    if scale < 0.8:  # edge lines only where a pixel is finer than the line (no aliasing)
        img[road & (dist > hw - line)] = EDGE
    img[road & (np.abs(along0) < line) & (np.abs(across0) <= hw)] = EDGE  # start/finish line
    img = img.reshape(size, size, 3)
    img.setflags(write=False)
    return img


def render_frame(sim: RacingSim, car: int, size: int = 96) -> np.ndarray:
    """Render car ``car`` of ``sim`` on its track: uint8 array (size, size, 3)."""
    if size < 8:
        raise ValueError(f"render size must be >= 8 pixels, got {size}")
    track = sim.tracks[car]
    if track is None:
        raise RuntimeError("render() called before reset()")
    frame = track_background(track, size).copy()
    x0, y0, scale = _frame_transform(track, size)
    params = sim.config.car
    # Car body: a rectangle, at least ~1.5 px on each side so it stays visible when small.
    half_l = max(0.5 * params.length, 0.9 * scale)
    half_w = max(0.5 * params.width, 0.75 * scale)
    cx, cy, psi = sim.x[car], sim.y[car], sim.psi[car]
    reach = np.hypot(half_l, half_w)
    col_lo = int(max(0, np.floor((cx - reach - x0) / scale)))
    col_hi = int(min(size, np.ceil((cx + reach - x0) / scale) + 1))
    row_lo = int(max(0, np.floor(size - (cy + reach - y0) / scale - 1)))
    row_hi = int(min(size, np.ceil(size - (cy - reach - y0) / scale) + 1))
    if col_lo >= col_hi or row_lo >= row_hi:
        return frame  # the car is outside the frame
    cols = x0 + (np.arange(col_lo, col_hi) + 0.5) * scale
    rows = y0 + (size - np.arange(row_lo, row_hi) - 0.5) * scale
    wx, wy = np.meshgrid(cols - cx, rows - cy)
    c, s = np.cos(psi), np.sin(psi)
    along = wx * c + wy * s
    across = -wx * s + wy * c
    inside = (np.abs(along) <= half_l) & (np.abs(across) <= half_w)
    frame[row_lo:row_hi, col_lo:col_hi][inside] = CAR
    return frame
