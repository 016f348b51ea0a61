"""``bench/gpu.py --dry-run``: every stage of the GPU benchmark on the CPU with tiny sizes
(the MFU arithmetic, the stock-BERT anchor, I3D, FAISS, ``videobert run``, the result files),
so the command is ready when a GPU is at hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_dry_run_writes_every_result(tmp_path: Path, sample_run):
    out = tmp_path / "gpu-results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["VIDEOBERT_WEIGHTS"] = str(sample_run["home"] / "weights")  # installed by that run
    # the end-to-end stage retrains a copy of the session's sample-corpus run (no new I3D)
    p = subprocess.run([sys.executable, "bench/gpu.py", "--dry-run", "--out", str(out),
                        "--work", str(tmp_path / "work"), "--e2e-from",
                        str(sample_run["home"])], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    docs = {d["stage"]: d for d in json.loads((out / "results.json").read_text())}
    assert list(docs) == ["env", "pretrain", "features", "faiss", "e2e"]
    assert all(d["status"] == "ok" for d in docs.values()), docs
    pre = docs["pretrain"]["result"]
    for row in pre["rows"]:
        ours, stock = row["videobert"], row["stock"]
        assert ours["tokens_per_s"] > 0 and stock["tokens_per_s"] > 0
        # MFU = model FLOPs per second over the (nominal, dry-run) peak
        assert abs(ours["mfu"] - ours["model_tflops"] / pre["peak_bf16_tflops"]) < 1e-9
        assert abs(row["ratio"] - ours["tokens_per_s"] / stock["tokens_per_s"]) < 1e-9
    feats = docs["features"]["result"]
    assert feats["pipeline_clips_per_s"] > 0 and feats["bound_by"] in ("decoding", "the model")
    search = docs["faiss"]["result"]
    assert search["cpu"]["recall_at_10"] > 0.99 and search["gpu"]["recall_at_10"] > 0.99
    e2e = docs["e2e"]["result"]
    assert set(e2e["seconds"]) >= {"ingest", "tokenize", "pretrain", "finetune", "index",
                                   "evaluate"}
    md = (out / "results.md").read_text()
    assert "DRY RUN" in md and "| 64 | | ratio |" in md and "`videobert run` end to end" in md
