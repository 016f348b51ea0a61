"""The data home: the one folder everything the pipeline writes lives in.

Resolution order: an explicit ``--home``, then ``VIDEOBERT_HOME``, then ``./videobert-data``.
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
    "runs/": "training runs: checkpoints, metrics, configs",
    "indices/": "FAISS indices and their manifests",
    "reports/": "evaluation reports (Markdown + PNG)",
    "prefect/": "Prefect's home when you have not configured your own server",
}


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The absolute data home for an explicit option, the environment, or the default."""
    raw = home if home not in (None, "") else os.environ.get("VIDEOBERT_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def configure_prefect_env(home: Path) -> None:
    """Point Prefect at the data home unless the user configured Prefect themselves.

    Sets telemetry off, quiet console logs, and ``PREFECT_HOME=<home>/prefect`` when neither
    ``PREFECT_HOME`` nor ``PREFECT_API_URL`` is set and no Prefect profile file exists in
    ``~/.prefect``. Must run before ``prefect`` is imported.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    user_profile = Path("~/.prefect/profiles.toml").expanduser()
    if ("PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ
            and not user_profile.exists()):
        os.environ["PREFECT_HOME"] = str(home / "prefect")
