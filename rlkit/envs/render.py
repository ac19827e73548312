"""Top-down rendering of the racing env with numpy only (no display, no extra packages).

The whole track is fitted into a square frame. The static part (grass, road, edge lines,
start line) depends only on the track and the frame size, so it is drawn once and cached;
each frame then only paints the car, which keeps rendering cheap enough for pixel-based
world models (64x64) and videos.

``render_mode="human"`` shows the same frames in a :class:`PygameWindow`; pygame is the
only optional dependency here and is imported when the first window opens
(``pip install pygame``, or the ``rlkit[human]`` extra).
"""

from __future__ import annotations

import os
from functools import lru_cache
from types import ModuleType

import numpy as np
from gymnasium.error import DependencyNotInstalled

from rlkit.envs.sim import RacingSim
from rlkit.envs.track import Track

__all__ = [
    "VIEWS",
    "PygameNotInstalled",
    "PygameWindow",
    "draw_dashboard",
    "import_pygame",
    "render_ego_frame",
    "render_frame",
    "render_view",
    "track_background",
]

GRASS = np.array([62, 138, 58], dtype=np.uint8)
ROAD = np.array([96, 96, 100], dtype=np.uint8)
EDGE = np.array([235, 235, 235], dtype=np.uint8)
CAR = np.array([220, 30, 30], dtype=np.uint8)
DASH_STEER = np.array([60, 140, 255], dtype=np.uint8)


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
    a = track.xy
    e = np.roll(a, -1, axis=0) - a
    e2 = (e**2).sum(axis=1)
    hw = track.half_width
    # Distance to the centreline, only where it can be <= hw: each segment updates the pixels
    # of its bounding box grown by hw (plus a pixel), the rest stay grass (inf). The same
    # values as over every pixel and segment, at a fraction of the cost.
    dist = np.full((size, size), np.inf)
    reach = hw + scale
    lo = np.minimum(a, a + e) - reach
    hi = np.maximum(a, a + e) + reach
    c0 = np.clip(np.floor((lo[:, 0] - x0) / scale), 0, size).astype(int)
    c1 = np.clip(np.ceil((hi[:, 0] - x0) / scale) + 1, 0, size).astype(int)
    r0 = np.clip(np.floor(size - (hi[:, 1] - y0) / scale) - 1, 0, size).astype(int)
    r1 = np.clip(np.ceil(size - (lo[:, 1] - y0) / scale) + 1, 0, size).astype(int)
    for i in range(len(a)):
        if c0[i] >= c1[i] or r0[i] >= r1[i]:
            continue
        box = np.s_[r0[i] : r1[i], c0[i] : c1[i]]
        qx, qy = wx[box] - a[i, 0], wy[box] - a[i, 1]
        u = np.clip((qx * e[i, 0] + qy * e[i, 1]) / e2[i], 0.0, 1.0)
        d2 = (qx - u * e[i, 0]) ** 2 + (qy - u * e[i, 1]) ** 2
        np.minimum(dist[box], np.sqrt(d2), out=dist[box])
    dist = dist.ravel()
    qx0, qy0 = wx.ravel() - a[0, 0], wy.ravel() - a[0, 1]
    along0 = qx0 * track.tangent[0, 0] + qy0 * track.tangent[0, 1]  # along the start line
    across0 = qx0 * track.normal[0, 0] + qy0 * track.normal[0, 1]  # across it
    line = max(0.4, 0.6 * scale)  # line width in metres, at least ~half a pixel
    road = dist <= hw
    img = np.empty((size * size, 3), dtype=np.uint8)
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


# ------------------------------------------------------------------ the car's own view
#: The ego view: ``EGO_EXTENT_M`` metres wide, the car fixed at the bottom quarter pointing
#: up, so it shows ``0.75 * EGO_EXTENT_M`` of road ahead in the same place on every track
#: (the top view puts the car anywhere on a track scaled to the frame).
EGO_EXTENT_M = 48.0
#: The resolution (pixels across the whole track) the ego view samples the track image from.
EGO_BACKGROUND = 512
VIEWS = ("top", "ego")


@lru_cache(maxsize=8)
def _ego_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Metres ahead of / right of the car of every pixel centre of a ``size`` ego frame."""
    m = EGO_EXTENT_M / size
    right = (np.arange(size) + 0.5 - 0.5 * size) * m
    ahead = (0.75 * size - np.arange(size) - 0.5) * m  # row 0: furthest ahead
    r, a = np.meshgrid(right, ahead)
    return a, r


def render_ego_frame(sim: RacingSim, car: int, size: int = 96) -> np.ndarray:
    """Car ``car`` of ``sim`` seen from above *its own* position and heading (a chase view):
    uint8 (size, size, 3), the road :data:`EGO_EXTENT_M` wide, sampled from the track image
    at :data:`EGO_BACKGROUND` pixels (grass beyond it)."""
    if size < 8:
        raise ValueError(f"render size must be >= 8 pixels, got {size}")
    track = sim.tracks[car]
    if track is None:
        raise RuntimeError("render() called before reset()")
    bg = track_background(track, EGO_BACKGROUND)
    x0, y0, scale = _frame_transform(track, EGO_BACKGROUND)
    ahead, right = _ego_grid(size)
    c, s = np.cos(sim.psi[car]), np.sin(sim.psi[car])
    wx = sim.x[car] + ahead * c + right * s
    wy = sim.y[car] + ahead * s - right * c
    col = np.floor((wx - x0) / scale).astype(np.int64)
    row = np.floor(EGO_BACKGROUND - (wy - y0) / scale).astype(np.int64)
    inside = (col >= 0) & (col < EGO_BACKGROUND) & (row >= 0) & (row < EGO_BACKGROUND)
    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:] = GRASS
    frame[inside] = bg[row[inside], col[inside]]
    params = sim.config.car
    half_l = max(0.5 * params.length, 0.9 * EGO_EXTENT_M / size)
    half_w = max(0.5 * params.width, 0.75 * EGO_EXTENT_M / size)
    frame[(np.abs(ahead) <= half_l) & (np.abs(right) <= half_w)] = CAR
    return frame


def render_view(sim: RacingSim, car: int, size: int, view: str = "top") -> np.ndarray:
    """:func:`render_frame` (``view="top"``: the whole track) or :func:`render_ego_frame`."""
    if view == "ego":
        return render_ego_frame(sim, car, size)
    if view != "top":
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    return render_frame(sim, car, size)


def draw_dashboard(frame: np.ndarray, speed: float, steer: float) -> np.ndarray:
    """Paint a dashboard over the bottom rows of ``frame`` (in place; returned): a black strip
    (1/16 of the height, at least 2 rows) whose upper half is a white speed bar growing from
    the left (``speed`` in [0, 1] of top speed) and whose lower half is a blue steering bar
    growing from the centre (``steer`` in [-1, 1], positive = left lock, drawn to the left).

    The car's speed and steering angle are not visible in one top-down or ego frame (a straight
    road looks the same at any speed); gymnasium's CarRacing shows its true speed and steering
    the same way, below the picture.
    """
    size = frame.shape[1]
    rows = max(2, frame.shape[0] // 16)
    half = rows // 2
    strip = frame[-rows:]
    strip[:] = 0
    n = int(round(float(np.clip(speed, 0.0, 1.0)) * size))
    strip[:half, :n] = EDGE
    mid = size // 2
    k = int(round(float(np.clip(steer, -1.0, 1.0)) * mid))
    lo, hi = (mid - k, mid) if k > 0 else (mid, mid - k)
    strip[half:, lo:hi] = DASH_STEER
    return frame


# ------------------------------------------------------------------ human rendering
PYGAME_HINT = "pip install pygame (or pip install 'rlkit[human]')"


class PygameNotInstalled(DependencyNotInstalled, ImportError):
    """pygame is missing: Gymnasium's ``DependencyNotInstalled``, and an ``ImportError`` so
    the command-line tools report it as one line."""


def import_pygame(purpose: str = 'render_mode="human"') -> ModuleType:
    """Import pygame, or raise :class:`PygameNotInstalled` naming the install command."""
    # pygame prints a banner on import; keep the tools' output to their own tables.
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as e:
        raise PygameNotInstalled(f"{purpose} needs pygame: {PYGAME_HINT}") from e
    return pygame


class PygameWindow:
    """A square window that shows uint8 (H, W, 3) frames at most ``fps`` times a second.

    Follows Gymnasium's classic-control envs: the display opens on construction, every
    :meth:`show` pumps the event queue (so the OS does not mark the window as frozen),
    flips the display and waits on a ``pygame.time.Clock`` to hold the frame rate.
    Closing the window with its close button ends the live view: later :meth:`show` calls
    do nothing and :attr:`is_open` is False.
    """

    def __init__(self, size: int, fps: float, title: str = "rlkit/Racing-v0") -> None:
        if size < 8:
            raise ValueError(f"window size must be >= 8 pixels, got {size}")
        pygame = import_pygame()
        self._pygame = pygame
        self.size = int(size)
        self.fps = float(fps)
        try:
            pygame.display.init()
            self.screen = pygame.display.set_mode((self.size, self.size))
        except pygame.error as e:
            pygame.display.quit()
            # OSError: the machine has no usable display, like a missing file for the CLIs
            raise OSError(
                f'render_mode="human" could not open a window ({e}); it needs a display '
                "(check DISPLAY, or set SDL_VIDEODRIVER=dummy to draw off-screen)"
            ) from e
        pygame.display.set_caption(title)
        self.clock = pygame.time.Clock()
        self.is_open = True

    def show(self, frame: np.ndarray) -> bool:
        """Draw ``frame`` (scaled to the window if its size differs); False once closed."""
        if not self.is_open:
            return False
        pygame = self._pygame
        if any(event.type == pygame.QUIT for event in pygame.event.get()):
            self.close()
            return False
        # surfarray indexes pixels (x, y); frames are (row, col) = (y, x)
        surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        if surface.get_size() != self.screen.get_size():
            surface = pygame.transform.scale(surface, self.screen.get_size())
        self.screen.blit(surface, (0, 0))
        pygame.display.flip()
        self.clock.tick(self.fps)
        return True

    def close(self) -> None:
        """Close the window (idempotent). Only the display is shut down, not all of pygame."""
        if self.is_open:
            self.is_open = False
            self._pygame.display.quit()
