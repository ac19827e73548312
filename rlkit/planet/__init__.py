"""PlaNet world models on pixels: episode storage, dataset, RSSM, CEM planner, online loop.

``train_world_model.py data_dir output_dir`` runs :func:`rlkit.planet.train.train_world_model`.
Submodules are imported on use (torch is only needed by the dataset, model and loop).
"""

from __future__ import annotations

__all__ = ["dataset", "envs", "model", "planner", "storage", "train"]
