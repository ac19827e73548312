"""The LeRobot on-disk format in one place: path templates, defaults, tolerances, feature
types (``info.json`` feature <-> parquet type) and the rules that number and fill data files.

The reader, the writer, the merger and the validator all take these from here::

    v3.0                                          v2.0 / v2.1
    root/                                         root/
    ├── meta/                                     ├── meta/
    │   ├── info.json                             │   ├── info.json
    │   ├── stats.json                            │   ├── episodes.jsonl
    │   ├── tasks.parquet      (task -> index)    │   ├── tasks.jsonl
    │   └── episodes/                             │   ├── episodes_stats.jsonl  (v2.1)
    │       └── chunk-000/                        │   └── stats.json            (v2.0, some v2.1)
    │           └── file-000.parquet              ├── data/
    ├── data/                                     │   └── chunk-000/
    │   └── chunk-000/                            │       ├── episode_000000.parquet
    │       ├── file-000.parquet (many episodes)  │       └── episode_000001.parquet
    │       └── file-001.parquet                  └── videos/chunk-000/{video_key}/
    └── videos/{video_key}/chunk-000/                 └── episode_000000.mp4
        └── file-000.mp4

A data or video file is located by ``loc``: in v3.0 its ``(chunk_index, file_index)``, in
v2.x the episode index (whose chunk is ``episode_index // chunks_size``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"  # what rlkit writes by default
SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"
LEGACY_EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
LEGACY_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
LEGACY_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

DEFAULT_CHUNKS_SIZE = 1000  # v3.0: files per chunk folder; v2.x: episodes per chunk folder
DEFAULT_DATA_FILES_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILES_SIZE_IN_MB = 500
TIMESTAMP_TOL_S = 1e-4  # lerobot's default tolerance_s for timestamp checks

INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
NON_TABULAR_DTYPES = ("image", "video")
NUMERIC_DTYPES = frozenset(
    {"bool", "float16", "float32", "float64"}
    | {f"{p}int{b}" for p in ("", "u") for b in (8, 16, 32, 64)}
)
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets.Image


class LeRobotFormatError(ValueError):
    """A LeRobot dataset (or data meant to become one) breaks the format.

    The message names the file or key, the offending value and how to fix it.
    """


# ----------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class Layout:
    """Where a dataset keeps its data and video files (the templates of its ``info.json``)."""

    version: str
    data_path: str
    video_path: str | None
    chunks_size: int = DEFAULT_CHUNKS_SIZE

    @classmethod
    def of(cls, info: dict[str, Any], version: str) -> Layout:
        """The layout an existing dataset's ``info.json`` declares (defaults where it is silent)."""
        default = DATA_PATH if version == "v3.0" else LEGACY_DATA_PATH
        return cls(
            version,
            str(info.get("data_path") or default),
            info.get("video_path") or None,
            int(info.get("chunks_size") or DEFAULT_CHUNKS_SIZE),
        )

    @classmethod
    def new(cls, version: str, chunks_size: int = DEFAULT_CHUNKS_SIZE, videos: bool = False):
        """The layout rlkit writes for ``version`` (``video_path`` null without videos)."""
        v3 = version == "v3.0"
        video = (VIDEO_PATH if v3 else LEGACY_VIDEO_PATH) if videos else None
        return cls(version, DATA_PATH if v3 else LEGACY_DATA_PATH, video, int(chunks_size))

    def data_file(self, loc: int | tuple[int, int]) -> str:
        """Relative path of the data file at ``loc`` (module docstring)."""
        return self._format(self.data_path, loc)

    def video_file(self, loc: int | tuple[int, int], key: str) -> str:
        """Relative path of video ``key``'s file at ``loc``; needs a ``video_path``."""
        if self.video_path is None:
            raise LeRobotFormatError(f"video {key!r} has no file: info.json video_path is null")
        return self._format(self.video_path, loc, video_key=key)

    def _format(self, pattern: str, loc: Any, **keys: str) -> str:
        if self.version == "v3.0":
            chunk, file = loc
            return pattern.format(chunk_index=int(chunk), file_index=int(file), **keys)
        ep = int(loc)
        return pattern.format(episode_chunk=ep // self.chunks_size, episode_index=ep, **keys)


# ----------------------------------------------------------------------------- feature types
def feature_shape(ft: dict[str, Any]) -> list[int]:
    """A feature's ``shape`` as ints (``[1]`` when absent or null)."""
    return [int(x) for x in ft.get("shape") or [1]]


def is_float(ft: dict[str, Any]) -> bool:
    """Whether a feature's dtype is a float (False for image/video/string, unknown dtypes)."""
    try:
        return np.dtype(str(ft.get("dtype"))).kind == "f"
    except TypeError:
        return False


def arrow_type(ft: dict[str, Any]) -> pa.DataType | None:
    """The parquet type lerobot stores an ``info.json`` feature as: scalars plain, 1-D
    vectors ``fixed_size_list<dtype>[D]``, images ``struct<bytes, path>``. None for videos
    (not in parquet) and for features of another kind (multi-dim arrays, unknown dtypes)."""
    dtype, shape = str(ft.get("dtype")), feature_shape(ft)
    if dtype == "image":
        return IMAGE_TYPE
    if dtype == "string":
        return pa.string()
    if dtype in NUMERIC_DTYPES and len(shape) == 1:
        value = pa.from_numpy_dtype(np.dtype(dtype))
        return value if shape == [1] else pa.list_(value, shape[0])
    return None


def type_problem(key: str, ft: dict[str, Any], typ: pa.DataType) -> str | None:
    """Why parquet type ``typ`` cannot hold feature ``ft`` (None when it can): a
    ``fixed_size_list`` as long as the shape, numeric values for a numeric dtype, floats at
    least as wide as declared (pandas' ``list<double>`` under ``float32`` is read and cast),
    images a struct with ``bytes``."""
    dtype = str(ft.get("dtype"))
    shape = feature_shape(ft)
    if dtype == "image":
        if pa.types.is_struct(typ) and typ.get_field_index("bytes") >= 0:
            return None
        return f"image feature {key!r} must be a struct<bytes, path>, got {typ}"
    if dtype == "string":
        ok = pa.types.is_string(typ) or pa.types.is_large_string(typ)
        return None if ok else f"string feature {key!r} has parquet type {typ}"
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return None  # a dtype rlkit does not know: nothing to compare
    value = typ
    width = None
    if pa.types.is_fixed_size_list(typ):
        value, width = typ.value_type, typ.list_size
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        value = typ.value_type
    elif shape != [1]:
        return f"feature {key!r} declares shape {shape} but its parquet column is scalar {typ}"
    if pa.types.is_list(value) or pa.types.is_fixed_size_list(value):
        return None  # nested (multi-dim) features: shape checked by the reader when loaded
    if width is not None and len(shape) == 1 and width != shape[0]:
        return f"feature {key!r} declares shape {shape} but its parquet column is {typ}"
    kinds = {
        "f": pa.types.is_floating(value),
        "i": pa.types.is_integer(value),
        "u": pa.types.is_integer(value),
        "b": pa.types.is_boolean(value),
    }
    if not kinds.get(kind, True):
        return f"feature {key!r} is declared {dtype} but its parquet values are {value}"
    if (
        kind == "f"
        and pa.types.is_floating(value)
        and value.bit_width < np.dtype(dtype).itemsize * 8
    ):
        # e.g. float64 declared over float32 data: the declaration promises a precision the
        # file does not hold. (Wider data than declared, e.g. pandas' list<double> under a
        # float32 feature, is read and cast to the declared dtype: accepted.)
        stored = np.dtype(value.to_pandas_dtype())
        return (
            f"feature {key!r} is declared {dtype} but its parquet values are {stored}; "
            f"declare it {stored} in meta/info.json or rewrite the column as {dtype}"
        )
    return None


def hf_feature(ft: dict[str, Any]) -> dict[str, Any] | None:
    """The ``datasets`` feature description lerobot stores in the parquet metadata (None for
    videos and multi-dim arrays)."""
    dtype, shape = ft["dtype"], feature_shape(ft)
    if dtype == "image":
        return {"_type": "Image"}
    if dtype == "video":
        return None
    value = {"dtype": dtype, "_type": "Value"}
    if shape == [1]:
        return value
    if len(shape) == 1:
        return {"feature": value, "length": shape[0], "_type": "Sequence"}
    return None


def parquet_schema(types: dict[str, pa.DataType], hf: dict[str, Any]) -> pa.Schema:
    """Columns ``types`` with lerobot's ``huggingface`` schema metadata (``hf`` features)."""
    return pa.schema(
        [pa.field(k, t) for k, t in types.items()],
        metadata={"huggingface": json.dumps({"info": {"features": hf}})},
    )


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: only low-cardinality ones. On float vectors pyarrow
    tries it, gives up, and it costs ~3x the write time and bigger files."""
    return [
        f.name
        for f in schema
        if f.name in ("episode_index", "task_index") or pa.types.is_boolean(f.type)
    ]


def list_column(values: np.ndarray) -> pa.Array:
    """``(E, *S)`` array -> (nested) ``list<...>`` column without a per-row loop: ``(E, D)``
    gives ``list<double>``, image stats ``(E, 3, 1, 1)`` ``list<list<list<double>>>``."""
    values = np.ascontiguousarray(values)
    arr: pa.Array = pa.array(values.reshape(-1))
    n_outer = values.shape[0]
    for depth in range(values.ndim - 1, 0, -1):
        width = values.shape[depth]
        count = n_outer * int(np.prod(values.shape[1:depth], dtype=np.int64))
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * width)
        arr = pa.ListArray.from_arrays(offsets, arr)
    return arr


# ----------------------------------------------------------------------------- data files
class FilePlanner:
    """Assigns v3.0 episodes, in order, a ``(chunk_index, file_index)``; episodes never span
    files.

    A new file starts when the current one would pass ``max_bytes`` (a single larger episode
    gets its own file); ``file_index`` rolls over into the next chunk after ``chunks_size``
    files. Keeps its position, so episodes can be planned batch by batch.
    """

    def __init__(self, max_bytes: float, chunks_size: int) -> None:
        self.max_bytes, self.chunks_size = max_bytes, chunks_size
        self.chunk, self.file, self.used = 0, 0, 0.0

    def assign(self, episode_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(chunk_index, file_index)`` of each episode (int64), given its estimated bytes."""
        n_eps = len(episode_bytes)
        chunk_idx = np.zeros(n_eps, dtype=np.int64)
        file_idx = np.zeros(n_eps, dtype=np.int64)
        for i, size in enumerate(np.asarray(episode_bytes, dtype=np.float64).tolist()):
            if self.used and self.used + size > self.max_bytes:
                self.file += 1
                if self.file >= self.chunks_size:
                    self.chunk, self.file = self.chunk + 1, 0
                self.used = 0.0
            chunk_idx[i], file_idx[i] = self.chunk, self.file
            self.used += size
        return chunk_idx, file_idx


class DataFileWriter:
    """Writes episodes into a dataset's data files, one parquet row group per episode.

    Each :meth:`write` names the file's ``loc``; a new ``loc`` closes the open file and
    starts the next (v3.0: consecutive episodes share a file; v2.x: one file per episode).
    """

    def __init__(self, root: Path, layout: Layout, schema: pa.Schema) -> None:
        self.root, self.layout, self.schema = root, layout, schema
        self._dict_cols = dictionary_columns(schema)
        self._pq: pq.ParquetWriter | None = None
        self._loc: Any = None

    def write(self, episode: pa.Table, loc: int | tuple[int, int]) -> None:
        """Append one episode's rows (a table of :attr:`schema`) to the file at ``loc``."""
        if self._pq is None or loc != self._loc:
            self.close()
            path = self.root / self.layout.data_file(loc)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._pq = pq.ParquetWriter(path, self.schema, use_dictionary=self._dict_cols)
            self._loc = loc
        self._pq.write_table(episode, row_group_size=episode.num_rows)

    def close(self) -> None:
        """Finish the open file (its footer is written here)."""
        if self._pq is not None:
            pq_writer, self._pq = self._pq, None
            pq_writer.close()
