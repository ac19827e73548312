"""Check a local LeRobot dataset against the invariants lerobot's loader assumes: all of
rlkit's validation, run by :func:`validate_dataset` (``rlkit-validate-lerobot DIR``, exit
code 0 valid, 1 problems found). Checked:

- episode indices 0..E-1 without gaps, no empty episode; v3.0 ``length`` /
  ``dataset_from_index`` / ``dataset_to_index`` agree with each other and with the rows of
  the data file each episode points to;
- tasks ordered by ``task_index`` 0..T-1, every task an episode names in the tasks table, each
  episode's ``tasks`` equal to the task strings of its rows' ``task_index``;
- ``info.json`` totals equal the actual counts, ``splits`` cover every episode;
- every referenced data and video file exists and is readable (a zero-byte or truncated
  parquet file is named, not a traceback); v3.0 video ``to_timestamp - from_timestamp`` is
  ``length / fps``, every episode's last frame lies inside its mp4, and its first and last
  frame decode (PyAV; skipped with a warning when ``av`` is not installed);
- ``index`` equals the global row position, ``frame_index`` counts from 0 and ``timestamp``
  steps by ``1/fps`` (tolerance :data:`~rlkit.lerobot.layout.TIMESTAMP_TOL_S`) within each
  episode, ``task_index`` values index the tasks table;
- every data file's columns against the ``info.json`` features: each declared feature is a
  column of a parquet type that fits its dtype and shape
  (:func:`~rlkit.lerobot.layout.type_problem`), no undeclared columns, float features free
  of NaN/inf;
- ``stats.json`` / ``episodes_stats.jsonl``: shapes (``count`` (1,), images (3,1,1), others
  the feature shape) and values finite; per-episode ``count`` equals the episode length.
"""

from rlkit.lerobot.validate.checks import validate_dataset

__all__ = ["validate_dataset"]
