"""The racing simulator core: N cars, each on its own track, stepped as numpy arrays.

One :class:`RacingSim` with ``N = 1`` is the engine of :class:`~rlkit.envs.racing.RacingEnv`;
with ``N`` cars it is the engine of :class:`~rlkit.envs.vec_env.RacingVecEnv`. Both call
the same :meth:`RacingSim.step`, and every operation in it is element-wise per car or a
reduction over one car's own row, so a car's trajectory does not depend on how many other
cars share the arrays (the tests check bit-for-bit equality).

Car model (kinematic bicycle, ``dt = 0.05`` s)::

    delta  <- delta + clip(steer * max_steer - delta, +-steer_rate * dt)   steering actuator
    omega   = v * tan(delta) / wheelbase                                     demanded yaw rate
    a_lat   = v * omega                                                      lateral acceleration
    |a_lat| > grip  ->  omega = sign(omega) * grip / v  (the car slides wide of its line)
                        and loses speed: v -= scrub * (|a_lat| - grip) * dt
    v      <- clip(v + a_long * dt, 0, max_speed),
              a_long = throttle * accel * (1 - v / max_speed)   (throttle >= 0)
                       throttle * brake                          (throttle < 0)
    psi    <- psi + omega * dt;   (x, y) <- (x, y) + v * (cos psi, sin psi) * dt

So a corner of radius r can be taken at ``sqrt(grip * r)`` at most: entering it faster
understeers the car off the road. Full throttle is not the fastest line.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlkit.envs.track import Track, TrackSpec, generate_track

__all__ = ["CarParams", "RacingConfig", "RacingSim"]


@dataclass(frozen=True)
class CarParams:
    """Vehicle parameters (SI units)."""

    wheelbase: float = 2.5
    max_steer: float = 0.5  # rad at the front wheels
    steer_rate: float = 3.0  # rad/s actuator limit
    max_speed: float = 30.0  # m/s
    accel: float = 6.0  # m/s^2 at standstill, fading to 0 at max_speed
    brake: float = 12.0  # m/s^2
    grip: float = 8.0  # m/s^2 lateral acceleration limit
    scrub: float = 0.1  # fraction of the excess lateral acceleration lost as braking
    length: float = 4.5  # body size, for rendering only
    width: float = 2.0


@dataclass(frozen=True)
class RacingConfig:
    """Everything that defines the racing task.

    Attributes:
        n_rays: range-sensor rays spread evenly over ``+-ray_fov / 2`` around the heading.
        ray_range: sensor range in metres (readings are ``distance / ray_range`` in [0, 1]).
        ray_fov: field of view in radians.
        preview: distances ahead (metres) at which the track curvature is observed.
        max_episode_steps: truncation horizon (steps of ``dt``).
        dt: simulation step in seconds.
        crash_penalty: subtracted from the reward on the step that leaves the track.
        edge: where the car leaves the track, as a fraction of the half-width from the
            centreline (1: the road's edge). RL trains PPO with 0.8 (``train_rl.py
            --train-edge``), so its policies keep a margin; evaluation uses 1.
        start_noise: half-widths of the uniform start perturbation:
            (lateral offset in half-widths, heading in radians).
        car: vehicle parameters.
        track: track generator parameters.
    """

    n_rays: int = 11
    ray_range: float = 25.0
    ray_fov: float = np.pi
    preview: tuple[float, ...] = (5.0, 15.0, 30.0, 50.0)
    max_episode_steps: int = 1000
    dt: float = 0.05
    crash_penalty: float = 10.0
    edge: float = 1.0
    start_noise: tuple[float, float] = (0.3, 0.05)
    car: CarParams = field(default_factory=CarParams)
    track: TrackSpec = field(default_factory=TrackSpec)

    def __post_init__(self) -> None:
        if self.n_rays < 1:
            raise ValueError(f"n_rays must be >= 1, got {self.n_rays}")
        if self.ray_range <= 0:
            raise ValueError(f"ray_range must be > 0, got {self.ray_range}")
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if self.dt <= 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        if not 0 < self.edge <= 1:
            raise ValueError(
                f"edge must be in (0, 1] (a fraction of the half-width), got {self.edge}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe dict (tuples become lists); inverse of :meth:`from_dict`."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RacingConfig:
        """Rebuild a config saved with :meth:`to_dict`; unknown keys raise ``ValueError``."""
        data = dict(data)

        def build(kind: type, values: dict[str, Any], where: str) -> Any:
            names = {f.name: f for f in dataclasses.fields(kind)}
            unknown = sorted(set(values) - set(names))
            if unknown:
                raise ValueError(f"unknown {where} key(s) {unknown}; valid keys: {sorted(names)}")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        car = build(CarParams, data.pop("car", {}), "car")
        track = build(TrackSpec, data.pop("track", {}), "track")
        cfg = build(cls, data, "racing config")
        return dataclasses.replace(cfg, car=car, track=track)

    @property
    def obs_dim(self) -> int:
        return self.n_rays + 4 + len(self.preview) + 2

    @property
    def obs_names(self) -> list[str]:
        """Names of the observation vector's entries, in order."""
        rays = [f"ray_{i}" for i in range(self.n_rays)]
        scalars = ["speed", "steering", "heading_error", "lateral_offset"]
        preview = [f"curvature_{d:g}m" for d in self.preview]
        return rays + scalars + preview + ["prev_steer", "prev_throttle"]

    @property
    def progress_unit(self) -> float:
        """Metres of progress worth a reward of 1: one step at top speed."""
        return self.car.max_speed * self.dt


def _wrap_angle(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


class RacingSim:
    """State and dynamics of ``num_cars`` cars, each on its own track.

    All state lives in arrays of shape ``(N,)`` (or ``(N, M)`` for the per-car track
    tables, ``M = config.track.n_samples``). Randomness comes only from the generator
    passed to :meth:`reset_car`, so callers own seeding.
    """

    _SEARCH = np.arange(-3, 4)  # nearest-sample search window: a car moves < 1 sample a step

    def __init__(self, num_cars: int, config: RacingConfig | None = None) -> None:
        if num_cars < 1:
            raise ValueError(f"num_cars must be >= 1, got {num_cars}")
        self.config = cfg = config or RacingConfig()
        self.num_cars = n = num_cars
        m = cfg.track.n_samples
        self.tracks: list[Track | None] = [None] * n
        self._all = np.arange(n)
        self._buffers: dict[str, np.ndarray] = {}
        # Per-car track tables, flattened: car i's sample j is at i * M + j (complex x + iy).
        self.t_c = np.zeros(n * m, dtype=np.complex128)
        self.t_left = np.zeros(n * m, dtype=np.complex128)
        self.t_right = np.zeros(n * m, dtype=np.complex128)
        self.t_curv = np.zeros(n * m)
        self.t_len = np.ones(n)
        self.t_ds = np.ones(n)
        # Car state.
        self.x = np.zeros(n)
        self.y = np.zeros(n)
        self.psi = np.zeros(n)
        self.v = np.zeros(n)
        self.delta = np.zeros(n)
        self.prev_action = np.zeros((n, 2))
        # Track-relative state.
        self.idx = np.zeros(n, dtype=np.int64)  # nearest centreline sample
        self.s = np.zeros(n)  # position along the lap in [0, length)
        self.lateral = np.zeros(n)  # signed offset from the centreline, left > 0
        self.heading_err = np.zeros(n)  # heading minus track direction, in [-pi, pi)
        self.progress = np.zeros(n)  # metres driven along the track since the start
        self.steps = np.zeros(n, dtype=np.int64)
        self.laps = np.zeros(n, dtype=np.int64)  # completed laps
        self.last_lap_step = np.zeros(n, dtype=np.int64)
        self.first_lap_time = np.full(n, np.nan)  # seconds, NaN until the first lap
        self.lap_time = np.zeros(n)  # seconds since the last lap (or start); set by step()
        self.off_track = np.zeros(n, dtype=bool)

        # Rays: angles relative to the heading; segment window wide enough to contain the
        # first boundary crossing of any ray (see _ray_window).
        if cfg.n_rays == 1:
            self.ray_angles = np.zeros(1)
        else:
            self.ray_angles = np.linspace(-cfg.ray_fov / 2, cfg.ray_fov / 2, cfg.n_rays)
        self._window = self._ray_window(cfg)
        self._preview = np.asarray(cfg.preview, dtype=np.float64)
        self._curv_scale = 1.0 / cfg.track.max_curvature  # curvature -> [-1, 1]

    @staticmethod
    def _ray_window(cfg: RacingConfig) -> np.ndarray:
        """Sample offsets of the boundary segments a ray can hit first.

        A ray leaves the road at its first boundary crossing; until then it stays inside the
        road, where arc length advances at most ``1 / (1 - k_max * half_width)`` metres per
        metre of ray. So the first crossing lies within that many ray lengths of the car
        along the track, and testing those segments is exact.
        """
        spec = cfg.track
        reach = cfg.ray_range / (1.0 - spec.max_curvature * spec.half_width)
        w = int(np.ceil(reach / (spec.length_range[0] / spec.n_samples))) + 1
        return np.arange(-w, w + 1)  # boundary vertices; segments join neighbours

    # ------------------------------------------------------------------ reset
    def reset_car(self, i: int, rng: np.random.Generator, track_seed: int | None = None) -> None:
        """Put car ``i`` at the start line of a new track.

        Args:
            i: car index.
            rng: the car's generator (its ``np_random``); draws the track seed (unless
                given) and the start perturbation.
            track_seed: use this track instead of a random one.
        """
        cfg = self.config
        seed = int(rng.integers(2**31 - 1)) if track_seed is None else int(track_seed)
        track = self.tracks[i]
        if track is None or track.seed != seed:
            track = generate_track(seed, cfg.track)
            self.tracks[i] = track
            rows = slice(i * track.n_samples, (i + 1) * track.n_samples)
            self.t_c[rows] = track.xy[:, 0] + 1j * track.xy[:, 1]
            self.t_left[rows] = track.left[:, 0] + 1j * track.left[:, 1]
            self.t_right[rows] = track.right[:, 0] + 1j * track.right[:, 1]
            self.t_curv[rows] = track.curvature
            self.t_len[i] = track.length
            self.t_ds[i] = track.ds
        lat_noise, head_noise = cfg.start_noise
        lateral = rng.uniform(-lat_noise, lat_noise) * track.half_width
        heading = rng.uniform(-head_noise, head_noise)
        tx, ty = track.tangent[0]
        self.x[i] = track.xy[0, 0] + lateral * track.normal[0, 0]
        self.y[i] = track.xy[0, 1] + lateral * track.normal[0, 1]
        self.psi[i] = np.arctan2(ty, tx) + heading
        self.v[i] = 0.0
        self.delta[i] = 0.0
        self.prev_action[i] = 0.0
        self.idx[i] = 0
        self.progress[i] = 0.0
        self.steps[i] = 0
        self.laps[i] = 0
        self.last_lap_step[i] = 0
        self.first_lap_time[i] = np.nan
        self.off_track[i] = False
        s, lat, herr, idx = self._locate(self._all[i : i + 1])
        self.s[i], self.lateral[i], self.heading_err[i], self.idx[i] = s[0], lat[0], herr[0], idx[0]

    # ------------------------------------------------------------------ geometry
    # Points are complex numbers x + iy: for vectors a, b, conj(a) * b has the dot product
    # as its real part and the cross product as its imaginary part, in one numpy pass.
    def _locate(self, cars: np.ndarray | None = None):
        """Nearest centreline segment, lap position, lateral offset, heading error."""
        m = self.config.track.n_samples
        cars = self._all if cars is None else cars
        base = cars * m
        p = self.x[cars] + 1j * self.y[cars]
        cand = (self.idx[cars, None] + self._SEARCH) % m
        d2 = np.abs(self.t_c[base[:, None] + cand] - p[:, None])
        j = cand[self._all[: len(cars)], d2.argmin(axis=1)]
        # Project onto segment j -> j+1, or j-1 -> j when the car is behind sample j.
        a = self.t_c[base + j]
        back = ((self.t_c[base + (j + 1) % m] - a).conjugate() * (p - a)).real < 0.0
        j0 = np.where(back, (j - 1) % m, j)
        a = self.t_c[base + j0]
        e = self.t_c[base + (j0 + 1) % m] - a
        seg = np.abs(e)
        proj = e.conjugate() * (p - a) / seg  # (along, left of) the segment, in metres
        u = np.clip(proj.real / seg, 0.0, 1.0)
        s = (j0 + u) * self.t_ds[cars]
        heading_err = _wrap_angle(self.psi[cars] - np.angle(e))
        return s, proj.imag, heading_err, j

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A reusable work array (a view of the first ``shape[0]`` rows of one allocation).

        Large temporaries cost page faults on every allocation; subsets of cars (auto-reset
        observations) reuse the full-size array instead of reallocating.
        """
        buf = self._buffers.get(name)
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = self._buffers[name] = np.empty((max(shape[0], self.num_cars), *shape[1:]), dtype)
        return buf[: shape[0]]

    def _rays(self, cars: np.ndarray) -> np.ndarray:
        """Distance along each ray to the first road boundary, capped at ``ray_range``.

        Exact intersection with the boundary polylines around each car. In a ray's frame
        (ray along +x) a segment crosses the ray iff its endpoints' y have opposite signs,
        at ``x = x0 - y0 (x1 - x0) / (y1 - y0)``. Only y is computed for every
        (car, ray, vertex); x and the crossing point only for the few sign changes.
        """
        cfg = self.config
        n, m, r = len(cars), cfg.track.n_samples, cfg.n_rays
        nv = self._window.size
        verts = cars[:, None] * m + (self.idx[cars, None] + self._window) % m  # (N, V)
        p = (self.x[cars] + 1j * self.y[cars])[:, None]
        # (N, 1, 2, V): both boundaries relative to the car, float32 (metres, |.| < 100).
        rx = self._buffer("rx", (n, 1, 2, nv), np.float32)
        ry = self._buffer("ry", (n, 1, 2, nv), np.float32)
        for side, bound in enumerate((self.t_left, self.t_right)):
            rel = bound[verts] - p
            rx[:, 0, side] = rel.real
            ry[:, 0, side] = rel.imag
        ang = self.psi[cars, None] + self.ray_angles[None, :]
        cos = np.cos(ang).astype(np.float32)[:, :, None, None]  # (N, R, 1, 1)
        sin = np.sin(ang).astype(np.float32)[:, :, None, None]
        # y: signed distance of each vertex from each ray's line, (N, R, 2, V).
        y = self._buffer("y", (n, r, 2, nv), np.float32)
        tmp = self._buffer("tmp", (n, r, 2, nv), np.float32)
        np.multiply(ry, cos, out=y)
        np.multiply(rx, sin, out=tmp)
        np.subtract(y, tmp, out=y)
        below = self._buffer("below", (n, r, 2, nv), np.bool_)
        np.less_equal(y, 0.0, out=below)
        flips = self._buffer("flips", (n, r, 2, nv - 1), np.bool_)
        np.not_equal(below[..., :-1], below[..., 1:], out=flips)
        # Sparse from here: only the segments whose endpoints straddle a ray.
        flat = np.flatnonzero(flips)
        rest, k = np.divmod(flat, nv - 1)
        rest, side = np.divmod(rest, 2)
        car, ray = np.divmod(rest, r)
        c, s = cos[car, ray, 0, 0], sin[car, ray, 0, 0]
        x0 = rx[car, 0, side, k] * c + ry[car, 0, side, k] * s
        x1 = rx[car, 0, side, k + 1] * c + ry[car, 0, side, k + 1] * s
        y0, y1 = y[car, ray, side, k], y[car, ray, side, k + 1]
        t = (x0 - y0 * (x1 - x0) / (y1 - y0)).astype(np.float64)
        t = np.where(t > 0.0, t, np.inf)
        out = np.full(n * r, cfg.ray_range)
        if t.size:
            key = rest  # = car * R + ray, nondecreasing: flatnonzero walks in C order
            starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            out[key[starts]] = np.minimum(np.minimum.reduceat(t, starts), cfg.ray_range)
        return out.reshape(n, r)

    # ------------------------------------------------------------------ observation
    def observe(self, cars: np.ndarray | None = None) -> np.ndarray:
        """Observation of the given cars (default: all), float32 ``(len(cars), obs_dim)``.

        Layout: rays / ray_range in [0, 1]; speed / max_speed; steering / max_steer;
        heading error / pi; lateral offset / half_width (clipped to [-2, 2]); curvature
        at each preview distance times the tightest allowed corner radius, in [-1, 1];
        previous action (steer, throttle) in [-1, 1].
        """
        cfg = self.config
        car = cfg.car
        m = cfg.track.n_samples
        cars = self._all if cars is None else np.asarray(cars)
        pos = (self.s[cars, None] + self._preview[None, :]) / self.t_ds[cars, None]  # in samples
        i0 = np.floor(pos).astype(np.int64)
        frac = pos - i0
        base = cars[:, None] * m
        k0 = self.t_curv[base + i0 % m]
        k1 = self.t_curv[base + (i0 + 1) % m]
        curv = (k0 + frac * (k1 - k0)) * self._curv_scale
        hw = cfg.track.half_width
        obs = np.concatenate(
            [
                self._rays(cars) / cfg.ray_range,
                (self.v[cars] / car.max_speed)[:, None],
                (self.delta[cars] / car.max_steer)[:, None],
                (self.heading_err[cars] / np.pi)[:, None],
                np.clip(self.lateral[cars] / hw, -2.0, 2.0)[:, None],
                np.clip(curv, -1.0, 1.0),
                self.prev_action[cars],
            ],
            axis=1,
        )
        return obs.astype(np.float32)

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray):
        """Advance every car by one ``dt``.

        Args:
            actions: ``(N, 2)`` in [-1, 1] (steer, throttle/brake); clipped.

        Returns:
            ``(reward, terminated, truncated, lap_done)``, each ``(N,)``. ``lap_done`` marks
            cars that completed a lap on this step (lap time = ``lap_time`` attribute).
        """
        cfg = self.config
        car = cfg.car
        dt = cfg.dt
        act = np.clip(np.asarray(actions, dtype=np.float64).reshape(self.num_cars, 2), -1.0, 1.0)
        steer, throttle = act[:, 0], act[:, 1]

        # Steering actuator, then yaw rate limited by grip.
        step_lim = car.steer_rate * dt
        self.delta = self.delta + np.clip(steer * car.max_steer - self.delta, -step_lim, step_lim)
        v = self.v
        omega = v * np.tan(self.delta) / car.wheelbase
        a_lat = np.abs(v * omega)
        sliding = a_lat > car.grip
        omega = np.where(sliding, np.sign(omega) * car.grip / np.maximum(v, 1e-6), omega)
        a_long = np.where(
            throttle >= 0.0, throttle * car.accel * (1.0 - v / car.max_speed), throttle * car.brake
        )
        a_long = a_long - np.where(sliding, car.scrub * (a_lat - car.grip), 0.0)
        self.v = np.clip(v + a_long * dt, 0.0, car.max_speed)
        self.psi = _wrap_angle(self.psi + omega * dt)
        self.x = self.x + self.v * np.cos(self.psi) * dt
        self.y = self.y + self.v * np.sin(self.psi) * dt
        self.prev_action = act
        self.steps = self.steps + 1

        # Progress along the centreline (wrapped across the start line).
        s_old = self.s
        self.s, self.lateral, self.heading_err, self.idx = self._locate()
        ds = self.s - s_old
        half = 0.5 * self.t_len
        ds = np.where(ds > half, ds - self.t_len, np.where(ds < -half, ds + self.t_len, ds))
        self.progress = self.progress + ds

        # Laps: the first time cumulative progress passes k * length.
        lap_done = self.progress >= (self.laps + 1) * self.t_len
        self.lap_time = (self.steps - self.last_lap_step) * dt
        self.first_lap_time = np.where(
            lap_done & (self.laps == 0), self.lap_time, self.first_lap_time
        )
        self.last_lap_step = np.where(lap_done, self.steps, self.last_lap_step)
        self.laps = self.laps + lap_done

        self.off_track = np.abs(self.lateral) > cfg.edge * cfg.track.half_width
        terminated = self.off_track.copy()
        truncated = (self.steps >= cfg.max_episode_steps) & ~terminated
        reward = ds / cfg.progress_unit - np.where(terminated, cfg.crash_penalty, 0.0)
        return reward, terminated, truncated, lap_done
