"""A VideoBert checkpoint folder's config, checked against its weights (no torch import).

A checkpoint is ``config.json`` + ``model.safetensors``; the safetensors header carries a copy
of the config, and a ``config.json`` edited or swapped after saving is refused. Used by
``models.videobert_weights.read_checkpoint`` (torch) and ``models.text_numpy`` (NumPy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
META_KEY = "videobert_config"  # the config the weights were saved with, in the safetensors header


def checked_config(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """The checkpoint's config and weights path, after checking one against the other.

    Raises:
        FileNotFoundError: a file is missing. ValueError: unreadable files, weights not written
        by ``write_checkpoint``, or a ``config.json`` that differs from the saved config.
    """
    from safetensors import SafetensorError, safe_open

    d = Path(directory)
    cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"no {p.name} in checkpoint folder {str(d)!r}")
    try:
        config = json.loads(cfg_path.read_text())
        with safe_open(str(w_path), framework="np") as f:
            meta = f.metadata() or {}
        if META_KEY not in meta:
            raise ValueError(f"{w_path} was not written by VideoBert.save_pretrained "
                             f"(no {META_KEY!r} in its header)")
        saved = json.loads(meta[META_KEY])
    except (json.JSONDecodeError, SafetensorError, OSError) as e:
        raise ValueError(f"unreadable checkpoint in {str(d)!r}: {e!r}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_path} does not hold a JSON object")
    differ = {k: (config.get(k), saved.get(k)) for k in config.keys() | saved.keys()
              if config.get(k) != saved.get(k) or (k in config) != (k in saved)}
    if differ:
        raise ValueError(f"{cfg_path} does not match the config {w_path.name} was saved with "
                         f"(field: (config.json, weights)): {dict(sorted(differ.items()))}")
    return config, w_path
