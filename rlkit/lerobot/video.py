"""Video features of LeRobot v3.0 datasets: encode an episode's frames, join encoded episodes
into the dataset's video files without re-encoding them, decode an episode's frames back.

Each episode is encoded on its own (PyAV; AV1 with libsvtav1 as LeRobot does by default, or
H.264 with libx264), with a keyframe at its first frame; the dataset writer then appends the
episodes' packets, in episode order, to ``videos/{key}/chunk-{c:03d}/file-{f:03d}.mp4`` (a new file
once the current one passes ``video_files_size_in_mb``), shifting their timestamps so that
episode ``e`` spans ``[from_timestamp, to_timestamp)`` of its file. The encoders are
deterministic (libsvtav1's output does not depend on its thread count, libx264 runs on one
thread), so the same frames give the same bytes whichever process encoded them.
"""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlkit.lerobot.stats import episode_stats_arrays

if TYPE_CHECKING:
    from rlkit.lerobot.layout import Layout

# Collection workers import this module to encode: it needs numpy and PyAV only (pyarrow,
# which rlkit.lerobot.layout loads, is imported where a dataset is written or read).

__all__ = [
    "VCODECS",
    "VideoFileWriter",
    "check_vcodec",
    "decode_episode",
    "decode_frames_at",
    "encode_episode",
    "image_episode_stats",
    "video_duration_s",
    "video_feature",
]

#: ``--vcodec`` -> (PyAV encoder, its options). AV1 as LeRobot encodes (CRF 30, a keyframe
#: every 2 frames, yuv420p), at SVT-AV1's fastest preset; H.264 on one thread (deterministic).
VCODECS: dict[str, tuple[str, dict[str, str]]] = {
    "libsvtav1": ("libsvtav1", {"crf": "30", "preset": "12", "g": "2"}),
    # x264 with its assembly gave other bytes for the same frames in ~2 % of encodes while
    # other threads of the process were busy (the collector's writer): 5 of 240; its C code
    # 0 of 480, for the same size and quality and ~1.5x its encoder CPU (docs/collect.md)
    "h264": ("libx264", {"crf": "23", "preset": "veryfast", "g": "2", "x264-params": "asm=0"}),
}
PIX_FMT = "yuv420p"
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise


def check_vcodec(vcodec: str) -> None:
    """Raise ValueError naming the encoders there are when ``vcodec`` cannot be used."""
    if vcodec not in VCODECS:
        raise ValueError(f"vcodec must be one of {', '.join(VCODECS)}, got {vcodec!r}")
    try:
        import av
    except ImportError:
        raise ValueError(
            "recording video needs PyAV, which is not installed; run: pip install 'rlkit[video]'"
        ) from None
    encoder = VCODECS[vcodec][0]
    if encoder not in av.codecs_available:
        there = [v for v, (enc, _) in VCODECS.items() if enc in av.codecs_available]
        raise ValueError(
            f"vcodec {vcodec}: this PyAV has no {encoder} encoder; available: "
            f"{', '.join(there) or 'none of ' + ', '.join(VCODECS)}"
        )


def encode_episode(frames: np.ndarray, fps: int, vcodec: str) -> bytes:
    """One episode's frames, uint8 ``(T, H, W, 3)``, as an mp4 file in memory."""
    import av

    encoder, options = VCODECS[vcodec]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream(encoder, rate=fps)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = PIX_FMT
        stream.options = dict(options)
        if encoder == "libx264":
            # x264's output depends on its thread count (FFmpeg's default: the cores); on
            # one thread it is the same on every machine (libsvtav1's output does not depend
            # on its threads: measured)
            stream.codec_context.thread_count = 1
        for frame in frames:
            rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
            # converted here on one thread: PyAV's encoder would use swscale's automatic
            # thread count, which depends on the machine
            out.mux(stream.encode(rgb.reformat(format=PIX_FMT, threads=1)))
        out.mux(stream.encode())
    return buf.getvalue()


#: Frames of an episode its image stats are computed from, evenly spaced (LeRobot samples
#: images the same way: stats over every pixel of every frame cost more than they tell).
STATS_FRAMES = 100


def image_episode_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's stats of an image feature for one episode: per channel, in [0, 1], each of
    shape ``(3, 1, 1)``, from up to :data:`STATS_FRAMES` evenly spaced frames (``count``: how
    many, shape ``(1,)``)."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), STATS_FRAMES)).round())
    sample = frames[idx.astype(np.int64)]
    pixels = sample.reshape(-1, sample.shape[-1]).astype(np.float32) / 255.0
    stats = episode_stats_arrays(pixels, np.array([0, len(pixels)]))
    out = {k: v[0].reshape(-1, 1, 1) for k, v in stats.items() if k != "count"}
    out["count"] = np.array([len(sample)], dtype=np.int64)
    return out


def video_feature(mp4: bytes, fps: int) -> dict[str, Any]:
    """The ``info.json`` feature of a video whose first episode is ``mp4``."""
    import av

    with av.open(io.BytesIO(mp4)) as c:
        s = c.streams.video[0]
        height, width = s.codec_context.height, s.codec_context.width
        codec = s.codec_context.name
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": "av1" if codec in ("libdav1d", "libaom-av1", "av1") else codec,
            "video.pix_fmt": PIX_FMT,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


class VideoFileWriter:
    """Append encoded episodes of one video feature to a dataset's video files, in order.

    Args:
        root: The dataset folder being written.
        key: The video feature.
        layout: Where its files go (:meth:`Layout.video_file`).
        fps: Frames per second of every episode.
        files_size_in_mb: A new file starts when the current one would pass this size.
        chunks_size: Files per chunk folder.
    """

    def __init__(
        self,
        root: Path,
        key: str,
        layout: Layout,
        fps: int,
        files_size_in_mb: float,
        chunks_size: int,
    ) -> None:
        self.root, self.key, self.layout, self.fps = root, key, layout, fps
        self.limit = files_size_in_mb * 1024**2
        self.chunks_size = chunks_size
        self.loc: tuple[int, int] | None = None
        self.out: Any = None
        self.stream: Any = None
        self.size = 0  # encoded bytes in the current file
        self.frames = 0  # frames in the current file

    def add(self, mp4: bytes, length: int) -> tuple[int, int, float, float]:
        """Append one episode of ``length`` frames; its ``(chunk_index, file_index,
        from_timestamp, to_timestamp)``."""
        import av

        if self.out is not None and self.size + len(mp4) > self.limit:
            self._close_file()
        with av.open(io.BytesIO(mp4)) as src:
            ins = src.streams.video[0]
            if self.out is None:
                self._open_file(ins)
            start = self.frames
            shift = int(round(Fraction(start, self.fps) / self.stream.time_base))
            count = 0
            for packet in src.demux(ins):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.pts = _rescale(packet.pts, ins.time_base, self.stream.time_base) + shift
                packet.dts = _rescale(packet.dts, ins.time_base, self.stream.time_base) + shift
                packet.stream = self.stream
                self.out.mux(packet)
                count += 1
        if count != length:
            from rlkit.lerobot.layout import LeRobotFormatError

            raise LeRobotFormatError(
                f"video {self.key!r}: an episode of {length} frames was encoded as {count}"
            )
        self.size += len(mp4)
        self.frames += length
        chunk, file = self.loc  # type: ignore[misc]
        return chunk, file, start / self.fps, self.frames / self.fps

    def _open_file(self, template: Any) -> None:
        import av

        if self.loc is None:
            self.loc = (0, 0)
        else:
            chunk, file = self.loc
            file += 1
            if file >= self.chunks_size:
                chunk, file = chunk + 1, 0
            self.loc = (chunk, file)
        path = self.root / self.layout.video_file(self.loc, self.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = av.open(str(path), "w", format="mp4")
        # a stream with the template's encoded parameters: packets are copied, never decoded
        # or re-encoded (opaque: the template's codec, AV1's decoder libdav1d, is not opened)
        self.stream = self.out.add_stream_from_template(template, opaque=True)
        self.stream.time_base = Fraction(1, self.fps * 512)
        self.size = self.frames = 0

    def _close_file(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None

    def close(self) -> None:
        self._close_file()


def _rescale(value: int, src: Fraction, dst: Fraction) -> int:
    return int(round(value * src / dst))


def decode_episode(path: Path, from_timestamp: float, to_timestamp: float) -> np.ndarray:
    """The frames of ``path`` whose timestamps lie in ``[from_timestamp, to_timestamp)``, as
    uint8 ``(T, H, W, 3)``."""
    import av

    frames = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        c.seek(int(from_timestamp / s.time_base), stream=s, backward=True, any_frame=False)
        eps = 0.5 / float(s.average_rate or s.guessed_rate or 1)
        for frame in c.decode(s):
            t = float(frame.pts * s.time_base)
            if t < from_timestamp - eps:
                continue
            if t >= to_timestamp - eps:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        from rlkit.lerobot.layout import LeRobotFormatError

        raise LeRobotFormatError(
            f"{path}: no frames in [{from_timestamp:.3f}, {to_timestamp:.3f}) s; the video is "
            "shorter than its episodes say"
        )
    return np.stack(frames)


def decode_frames_at(path: Path, timestamps: list[float], fps: float) -> list[np.ndarray | None]:
    """For each timestamp, the frame of ``path`` shown at it (uint8 ``(H, W, 3)``), or None
    when the video has no such frame or it cannot be decoded. One open file, a seek each."""
    import av

    eps = 0.5 / fps
    out: list[np.ndarray | None] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for t in timestamps:
            got = None
            try:
                c.seek(max(0, int(t / s.time_base)), stream=s, backward=True, any_frame=False)
                for frame in c.decode(s):
                    ft = float(frame.pts * s.time_base)
                    if ft >= t - eps:
                        got = frame.to_ndarray(format="rgb24") if ft < t + eps else None
                        break
            except av.error.FFmpegError:  # type: ignore[attr-defined]
                got = None
            out.append(got)
    return out


def video_duration_s(path: str | Path) -> float:
    """Duration in seconds of the first video stream of an mp4 (PyAV).

    Raises:
        ImportError: If PyAV is not installed (``pip install av`` or ``pip install rlkit[video]``).
        LeRobotFormatError: If the file cannot be opened as a video.
    """
    import av

    from rlkit.lerobot.layout import LeRobotFormatError

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise LeRobotFormatError(f"{path} has no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1e6  # microseconds
            if stream.frames and stream.average_rate:
                return float(stream.frames / stream.average_rate)
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise LeRobotFormatError(f"{path} is not a readable video ({e}); re-encode it") from e
    raise LeRobotFormatError(f"{path}: cannot tell the video duration; re-encode it")
