"""The data home: the one folder everything the pipeline writes lives in.

Resolution order: an explicit ``--home``, then ``VIDEOBERT_HOME``, then ``./videobert-data``.
Part of the foundation every layer may use (with ``warehouse/atomic.py``): it imports nothing
of the project.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "videobert-data"

LAYOUT: dict[str, str] = {
    "warehouse/catalog.duckdb": "published read-only DuckDB catalog: one view per table",
    "warehouse/manifest.json": "commit log: the Parquet parts of every table",
    "warehouse/tables/<table>/": "Parquet parts of each table",
    "samples/": "the built-in sample corpus (`videobert samples`)",
    "weights/": "converted model weights (safetensors)",
    "asr/models/": "speech-to-text models assembled from split pip packages (Whisper base)",
    "asr/cache/<model>/": "one transcript per video and ASR model (JSON): never transcribed twice",
    "runs/": "training runs: checkpoints, metrics, configs",
    "indices/": "FAISS indices and their manifests",
    "reports/": "evaluation reports (Markdown + PNG)",
    "prefect/": "Prefect's home when you have not configured your own server",
}


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The absolute data home for an explicit option, the environment, or the default."""
    raw = home if home not in (None, "") else os.environ.get("VIDEOBERT_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def sample_corpus_dir(home: Path) -> Path:
    """Where a data home keeps the built-in sample corpus (``HOME/samples/real``)."""
    return Path(home) / "samples" / "real"
