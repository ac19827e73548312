"""The merged dataset's features and parquet schema: every source must have the same keys
and dtypes; vector features whose dims differ are zero-padded to the largest (or
``pad_to``), images and videos must have the same shape (either axis order)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from rlkit.lerobot.layout import (
    INDEX_FEATURES,
    INFO_PATH,
    NUMERIC_DTYPES,
    LeRobotFormatError,
    arrow_type,
    feature_shape,
    hf_feature,
    parquet_schema,
)
from rlkit.lerobot.merge.config import MergeConfig
from rlkit.lerobot.reader import DatasetReader

logger = logging.getLogger(__name__)

Padded = dict[str, tuple[list[int], int]]  # feature -> (dim in each source, merged dim)


@dataclass
class Feature:
    key: str
    kind: str  # index | scalar | vector | image | video | string | other
    spec: dict[str, Any]  # output info.json entry
    dims: list[int] = field(default_factory=list)  # vector: dim in each source
    arrow: pa.DataType | None = None  # output parquet type (None for video)

    @property
    def tabular(self) -> bool:
        return self.kind in ("index", "scalar", "vector")


def merge_features(dss: list[DatasetReader], cfg: MergeConfig) -> tuple[dict[str, Feature], Padded]:
    """The output's features in the first source's order, and the ones padded."""
    first = dss[0]
    keys = list(first.features)
    for ds in dss[1:]:
        missing = [k for k in keys if k not in ds.features]
        extra = [k for k in ds.features if k not in first.features]
        if missing or extra:
            raise LeRobotFormatError(
                f"sources must have the same feature keys: {ds.root} lacks {missing} and has "
                f"{extra} compared with {first.root}; rename or drop features so they match"
            )
    out = {key: _merge_feature(key, dss, cfg) for key in keys}
    padded: Padded = {
        key: (ft.dims, ft.spec["shape"][0])
        for key, ft in out.items()
        if ft.kind == "vector" and min(ft.dims) < ft.spec["shape"][0]
    }
    for key in INDEX_FEATURES:
        if key not in out:
            raise LeRobotFormatError(
                f"{first.root / INFO_PATH} lacks the index feature {key!r}; every LeRobot dataset "
                f"has {list(INDEX_FEATURES)}"
            )
    _warn_differences(dss, out, padded)
    return out, padded


def _merge_feature(key: str, dss: list[DatasetReader], cfg: MergeConfig) -> Feature:
    first = dss[0]
    specs = [ds.features[key] for ds in dss]
    dtypes = [str(s.get("dtype")) for s in specs]
    for ds, dt in zip(dss[1:], dtypes[1:], strict=True):
        if dt != dtypes[0]:
            raise LeRobotFormatError(
                f"feature {key!r} has dtype {dtypes[0]} in {first.root} but {dt} in "
                f"{ds.root}; convert one source so the dtypes match"
            )
    dtype = dtypes[0]
    spec = json.loads(json.dumps(specs[0]))  # deep copy
    shapes = [feature_shape(s) for s in specs]
    if key in INDEX_FEATURES:
        spec["shape"] = spec.get("shape") or [1]
        return Feature(key, "index", spec)
    if dtype in ("image", "video"):
        norm = [_image_hwc(s) for s in shapes]
        for ds, sh, nm in zip(dss, shapes, norm, strict=True):
            if nm != norm[0]:
                raise LeRobotFormatError(
                    f"{dtype} feature {key!r} has shape {shapes[0]} in {first.root} but {sh} "
                    f"in {ds.root}; image/video shapes must match (resize one source)"
                )
            if sh != shapes[0]:
                logger.info(
                    "%s: %r shape %s vs %s in %s (same image, other axis order); output uses %s",
                    *(first.root, key, shapes[0], sh, ds.root, shapes[0]),
                )
        return Feature(key, dtype, spec)
    if dtype in NUMERIC_DTYPES and all(len(s) == 1 for s in shapes):
        return _merge_vector(key, dss, specs, [s[0] for s in shapes], cfg)
    if dtype == "string":
        return Feature(key, "string", spec)
    for ds, sh in zip(dss, shapes, strict=True):
        if sh != shapes[0]:
            raise LeRobotFormatError(
                f"feature {key!r} has shape {shapes[0]} in {first.root} but {sh} in "
                f"{ds.root}; only 1-D vectors can be padded, make the shapes match"
            )
    return Feature(key, "other", spec)


def _merge_vector(
    key: str,
    dss: list[DatasetReader],
    specs: list[dict[str, Any]],
    dims: list[int],
    cfg: MergeConfig,
) -> Feature:
    """A numeric feature of dim ``dims[i]`` in source ``i``: a scalar, or a vector of the
    largest dim (or ``pad_to``) that the narrower sources are zero-padded to."""
    if max(dims) == 1:
        return Feature(key, "scalar", json.loads(json.dumps(specs[0])), dims)
    target = cfg.pad_to or max(dims)
    if len(set(dims)) > 1 and not cfg.pad:
        detail = ", ".join(f"{ds.root}: {d}" for ds, d in zip(dss, dims, strict=True))
        raise LeRobotFormatError(
            f"feature {key!r} has different dims ({detail}) and --no-pad is set; drop "
            "--no-pad to zero-pad to the largest dim"
        )
    if target < max(dims):
        worst = dss[int(np.argmax(dims))].root
        raise LeRobotFormatError(
            f"--pad-to {target} is smaller than feature {key!r}'s dim {max(dims)} in "
            f"{worst}; pass --pad-to >= {max(dims)}"
        )
    widest = int(np.argmax(dims))
    spec = json.loads(json.dumps(specs[widest]))
    spec["shape"] = [target]
    if target != dims[widest]:
        spec["names"] = _extend_names(spec.get("names"), dims[widest], target)
    return Feature(key, "vector", spec, dims)


def _warn_differences(dss: list[DatasetReader], out: dict[str, Feature], padded: Padded) -> None:
    first = dss[0]
    for ds in dss[1:]:
        if ds.info.get("robot_type") != first.info.get("robot_type"):
            logger.warning(
                "robot_type differs: %r in %s, %r in %s; the output keeps %r",
                first.info.get("robot_type"),
                first.root,
                ds.info.get("robot_type"),
                ds.root,
                first.info.get("robot_type"),
            )
        for key, ft in out.items():
            if ft.kind == "vector" and key not in padded:
                a, b = first.features[key].get("names"), ds.features[key].get("names")
                if a != b:
                    logger.warning(
                        "feature %r has different names in %s and %s; the output keeps %s's",
                        *(key, first.root, ds.root, first.root),
                    )


def _extend_names(names: Any, old: int, new: int) -> Any:
    """Extend the per-dimension ``names`` (flat list, nested list or dict) from old to new dims.

    The list of length ``old`` found in the structure gets ``pad_{i}`` entries appended;
    anything else (null, a list of another length) is returned unchanged.
    """
    if isinstance(names, list):
        if len(names) == old and all(not isinstance(n, (list, dict)) for n in names):
            return [*names, *(f"pad_{i}" for i in range(old, new))]
        return [_extend_names(n, old, new) for n in names]
    if isinstance(names, dict):
        return {k: _extend_names(v, old, new) for k, v in names.items()}
    return names


def _image_hwc(shape: list[int]) -> tuple[int, ...]:
    """``[3,H,W]`` or ``[H,W,3]`` -> ``(H, W, C)``, so both conventions compare equal."""
    s = tuple(int(x) for x in shape)
    if len(s) == 3 and s[0] in (1, 3, 4) and s[2] not in (1, 3, 4):
        return (s[1], s[2], s[0])
    return s


# ----------------------------------------------------------------------------- schema
def output_schema(features: dict[str, Feature], schemas: list[pa.Schema]) -> pa.Schema:
    """Set each feature's output parquet type and build the schema with lerobot's
    ``huggingface`` metadata; ``schemas`` are the sources' (first file each)."""
    hf: dict[str, Any] = {}
    for key, ft in features.items():
        ft.arrow = None if ft.kind == "video" else arrow_type(ft.spec)
        if ft.arrow is None and ft.kind != "video":  # other: the first source's parquet type
            ft.arrow = next((s.field(key).type for s in schemas if key in s.names), None)
            if ft.arrow is None:
                raise LeRobotFormatError(f"no data file has a column {key!r}")
        desc = hf_feature(ft.spec) if ft.tabular else None
        if desc is None and ft.kind != "video":
            desc = _source_hf(schemas, key) or hf_feature(ft.spec)
        if desc is not None:
            hf[key] = desc
    return parquet_schema({k: ft.arrow for k, ft in features.items() if ft.arrow is not None}, hf)


def _source_hf(schemas: list[pa.Schema], key: str) -> dict[str, Any] | None:
    for schema in schemas:
        raw = (schema.metadata or {}).get(b"huggingface")
        if raw:
            try:
                desc = json.loads(raw)["info"]["features"].get(key)
            except (ValueError, KeyError, TypeError):
                continue
            if desc is not None:
                return desc
    return None
