"""GPU figures in one prepared command: pretraining MFU, I3D features, FAISS on the GPU and an
end-to-end run, each stage bounded in time, results as JSON and Markdown.

Stages, in order (a stage that fails or times out marks the later ones skipped):

- ``env``: the GPU, its bf16 dense peak (a table keyed by device name, ``bench/train.py``),
  torch, FAISS and how many GPUs FAISS sees.
- ``pretrain``: the ``base`` preset (12 x 768) in bf16 at seq 128 and 512: tokens/s, model
  FLOPs utilisation ((6 x non-embedding params + 12 x layers x hidden x seq) per token over
  the peak) and peak memory; the same steps of stock ``BertForMaskedLM`` with the same shapes,
  same run, as the anchor (``bench/train.py``'s two loops).
- ``features``: I3D on synthetic clips (``videobert samples --synthetic``): clips/s of the
  tokenize pipeline (decode + model, overlapped), of the model alone (pre-decoded) and of
  decoding alone, so it is visible which one bounds.
- ``faiss``: 1M x 256 clustered unit vectors: build and query of the index ``videobert index``
  would pick on the CPU and on the GPU (``choose_index``), recall@10 against exact search and
  the speed-up; without faiss-gpu the GPU side is a torch brute-force top-k, labelled so.
- ``e2e``: ``videobert samples --synthetic N`` then ingest, tokenize, pretrain, finetune,
  index and evaluate on the GPU, each command's wall time.

``--dry-run`` runs every stage on the CPU with tiny sizes (and a nominal 1 TFLOP/s peak, so
the MFU arithmetic runs): the test suite runs it, so the command cannot rot between the rare
occasions a GPU is at hand. Each stage runs in its own process under a time limit (``--budget-s``
in all, default 420). Usage::

    python bench/gpu.py --out gpu-results                # on the GPU machine
    python bench/gpu.py --dry-run --out gpu-results      # here, on the CPU

``bench/gpu_prepare.sh`` prepares what a bare GPU machine without a package registry needs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("env", "pretrain", "features", "faiss", "e2e")
SHARE = {"env": 0.05, "pretrain": 0.3, "features": 0.15, "faiss": 0.15, "e2e": 0.35}
DRY_PEAK_TFLOPS = 1.0  # nominal, so the dry run's MFU arithmetic has a denominator


# ---------------------------------------------------------------------------------- stages
def stage_env(a: argparse.Namespace) -> dict[str, Any]:
    """The machine: GPU, its peak, library versions."""
    import faiss
    import torch

    from bench.train import PEAK_BF16_TFLOPS

    cuda = torch.cuda.is_available()
    if not cuda and not a.dry_run:
        raise RuntimeError("no CUDA GPU visible to torch (use --dry-run on a CPU machine)")
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = a.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name),
                                 DRY_PEAK_TFLOPS if a.dry_run else None)
    return {"device": name, "cuda": cuda, "peak_bf16_tflops": peak, "torch": torch.__version__,
            "faiss": faiss.__version__, "faiss_gpus": faiss.get_num_gpus(),
            "python": sys.version.split()[0], "cpus": os.cpu_count(), "dry_run": a.dry_run}


def stage_pretrain(a: argparse.Namespace) -> dict[str, Any]:
    """Ours vs stock BertForMaskedLM at the base preset, bf16, seq 128 and 512."""
    import numpy as np
    import torch

    from bench.train import batches, make_sequences, ours, rate, stock
    from models.videobert_config import PRESETS

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.dry_run:
        cfg, n_visual, shapes, steps = ({"hidden": 64, "layers": 2, "heads": 2,
                                         "intermediate": 128}, 64, ((32, 4), (64, 2)), 2)
    else:
        cfg = {k: PRESETS["base"][k] for k in ("hidden", "layers", "heads", "intermediate")}
        n_visual, shapes, steps = 20736, ((128, 128), (512, 32)), 8
    peak = _env_peak(a)
    out = []
    for seq, batch in shapes:
        rng = np.random.default_rng(seq)
        data = batches(make_sequences(batch * steps, seq, n_visual, True, rng), batch,
                       bucketed=True, rng=rng)
        row: dict[str, Any] = {"seq": seq, "batch": batch}
        for side in ("videobert", "stock"):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            torch.manual_seed(0)
            step, model = (ours(cfg, n_visual, dev, False) if side == "videobert"
                           else stock(cfg, n_visual, dev))
            for b in data[:2]:
                step(b)  # warm-up
            tps = statistics.median(rate(step, data, dev) for _ in range(2))
            embed = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n
                        or "decoder" in n)
            n_params = sum(p.numel() for p in model.parameters()) - embed
            flops_tok = 6 * n_params + 12 * cfg["layers"] * cfg["hidden"] * seq
            row[side] = {"tokens_per_s": tps, "non_embedding_params": n_params,
                         "model_tflops": flops_tok * tps / 1e12,
                         "mfu": flops_tok * tps / (peak * 1e12) if peak else None,
                         "peak_mem_gib": (torch.cuda.max_memory_allocated(dev) / 2**30
                                          if dev.type == "cuda" else None)}
            del step, model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        row["ratio"] = row["videobert"]["tokens_per_s"] / row["stock"]["tokens_per_s"]
        out.append(row)
    return {"config": cfg, "n_visual": n_visual, "peak_bf16_tflops": peak, "rows": out}


def stage_features(a: argparse.Namespace) -> dict[str, Any]:
    """I3D clips/s: pipeline (decode + model), model only, decode only."""
    import numpy as np

    from tasks.ingest.synthetic import generate_synthetic
    from tasks.tokens.encoders import I3DEncoder
    from tasks.tokens.features import ClipRef, encode_clips, read_clips

    work = Path(a.work)
    n_videos, per_video, batch = (2, 1, 2) if a.dry_run else (96, 2, 32)
    corpus = generate_synthetic(work / "features-corpus", n_videos, seed=0,
                                workers=os.cpu_count() or 2)
    videos = sorted(corpus.root.rglob("*.mp4"))[:n_videos]
    clips = [ClipRef(f"{v.stem}-{i}", v.stem, str(v), 1.5 * i, 1.5 * (i + 1))
             for v in videos for i in range(per_video)]
    enc = I3DEncoder(_weights_dir(work), "auto")
    workers = os.cpu_count() or 2
    t0 = time.perf_counter()
    decoded = np.stack([f for _, f, _ in read_clips(clips, enc.n_frames, enc.size, 1.5,
                                                    workers=workers)])
    decode_s = time.perf_counter() - t0
    enc.encode(decoded[:batch])  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(decoded), batch):
        enc.encode(decoded[s : s + batch])
    model_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows, fails = encode_clips(enc, clips, 1.5, batch_size=batch, workers=workers)
    pipe_s = time.perf_counter() - t0
    if fails or len(rows) != len(clips):
        raise RuntimeError(f"{len(fails)} clips failed in the pipeline")
    n = len(clips)
    return {"clips": n, "batch": batch, "decode_workers": workers, "device": str(enc.device),
            "pipeline_clips_per_s": n / pipe_s, "model_clips_per_s": n / model_s,
            "decode_clips_per_s": n / decode_s,
            "bound_by": "decoding" if decode_s > model_s else "the model"}


def stage_faiss(a: argparse.Namespace) -> dict[str, Any]:
    """CPU vs GPU index build and query on n x 256 clustered vectors."""
    import faiss

    from bench.search import make_embeddings, recall_at
    from tasks.retrieval import index as ix

    n, nq, d, k = (20000, 200, 64, 10) if a.dry_run else (1_000_000, 10_000, 256, 10)
    allx = make_embeddings(n + nq, d, max(50, n // 1000), 0)
    x, q = allx[:n], allx[n:]
    _, truth = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)
    out: dict[str, Any] = {"n": n, "d": d, "queries": nq}
    ids = [str(i) for i in range(n)]
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        for side, gpu in (("cpu", False), ("gpu", True)):
            if gpu and faiss.get_num_gpus() == 0:
                out["gpu"] = _torch_topk(x, q, truth, k)
                continue
            spec = ix.choose_index(n, d, 8192 << 20, gpu=gpu)
            t0 = time.perf_counter()
            info = ix.build_index(x, ids, ids, spec, Path(tmp), encoder="bench",
                                  model_run=side, level="clip", publish=False)
            build_s = time.perf_counter() - t0
            loaded = ix.load_index(info.path)
            t0 = time.perf_counter()
            _, rows = loaded.search_rows(q, k)
            query_s = time.perf_counter() - t0
            out[side] = {"index": spec.factory, "build_s": build_s,
                         "query_ms": 1e3 * query_s / nq, "recall_at_10": recall_at(rows, truth)}
    out["query_speedup"] = out["cpu"]["query_ms"] / out["gpu"]["query_ms"]
    return out


def _torch_topk(x: Any, q: Any, truth: Any, k: int) -> dict[str, Any]:
    """Exact top-k with a torch matmul on the GPU (or CPU): the stand-in without faiss-gpu."""
    import torch

    from bench.search import recall_at

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    xt = torch.from_numpy(x).to(dev, torch.float16 if dev.type == "cuda" else torch.float32)
    qt = torch.from_numpy(q).to(xt)
    torch.topk(qt[:8] @ xt.T, k)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    rows = torch.cat([torch.topk(qt[s : s + 1024] @ xt.T, k).indices
                      for s in range(0, len(qt), 1024)])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    return {"index": f"torch exact top-k ({dev.type}, no faiss-gpu)", "build_s": 0.0,
            "query_ms": 1e3 * sec / len(q), "recall_at_10": recall_at(rows.cpu().numpy(), truth)}


def stage_e2e(a: argparse.Namespace) -> dict[str, Any]:
    """``videobert run`` end to end (the nightly flow once) with each stage's wall time: on the
    GPU a 200-video synthetic corpus; in the dry run the built-in sample corpus."""
    home = Path(a.work) / "e2e-home"
    env = os.environ | {"VIDEOBERT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    weights = _weights_dir(Path(a.work))
    (home / "weights").mkdir(parents=True, exist_ok=True)
    for f in weights.glob("i3d_*"):
        if not (home / "weights" / f.name).exists():
            (home / "weights" / f.name).symlink_to(f.resolve())
    seconds: dict[str, float] = {}

    def cli(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "videobert.cli", *args], env=env,
                           capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise RuntimeError(f"videobert {' '.join(args)} failed: {p.stderr[-2000:]}")
        return p.stdout

    if a.dry_run:
        n, preset, steps, ft, source = 0, "tiny", 2, 2, []
        if a.e2e_from:  # a home that already ran: retrain it (--force), skip ingest and I3D
            import shutil

            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(a.e2e_from, home, ignore=shutil.ignore_patterns("prefect"))
            source = ["--force"]
    else:
        n, preset, steps, ft = 200, "small", 1000, 300
        t0 = time.perf_counter()
        cli("samples", "--synthetic", str(n))
        seconds["samples"] = time.perf_counter() - t0
        source = ["--source", str(home / "samples" / f"synthetic-{n}-seed0" / "captions.jsonl")]
    t0 = time.perf_counter()
    result = json.loads(cli("run", *source, "--preset", preset, "--pretrain-steps", str(steps),
                            "--finetune-steps", str(ft), "--format", "json")
                        .strip().splitlines()[-1])
    total = time.perf_counter() - t0
    seconds |= result.get("seconds", {})
    rows = (result.get("evaluation") or {}).get("rows", [])
    r1 = next((r["r1"] for r in rows if r["encoder"] == "videobert" and r["level"] == "clip"
               and r["direction"] == "t2v" and r["mode"] == "exact"), None)
    return {"videos": n or "sample corpus", "preset": preset, "pretrain_steps": steps,
            "finetune_steps": ft, "seconds": seconds, "total_s": total + seconds.get("samples", 0),
            "split": (result.get("evaluation") or {}).get("split"), "videobert_t2v_r1": r1}


def _env_peak(a: argparse.Namespace) -> float | None:
    env = Path(a.out) / "env.json"
    got = json.loads(env.read_text()).get("result", {}) if env.is_file() else {}
    return got.get("peak_bf16_tflops") or a.peak_tflops or (DRY_PEAK_TFLOPS if a.dry_run
                                                             else None)


def _weights_dir(work: Path) -> Path:
    """The I3D weights: $VIDEOBERT_WEIGHTS (prepared), else installed into the work folder."""
    given = os.environ.get("VIDEOBERT_WEIGHTS")
    return Path(given) if given else work / "weights"


RUNNERS = {"env": stage_env, "pretrain": stage_pretrain, "features": stage_features,
           "faiss": stage_faiss, "e2e": stage_e2e}


# --------------------------------------------------------------------------- orchestration
def run_stage(a: argparse.Namespace) -> None:
    """Child process: one stage, its result (or error) in OUT/<stage>.json."""
    t0 = time.perf_counter()
    try:
        doc = {"stage": a.stage, "status": "ok", "result": RUNNERS[a.stage](a)}
    except Exception as e:  # noqa: BLE001 - recorded, and the parent skips what follows
        doc = {"stage": a.stage, "status": "failed", "error": f"{type(e).__name__}: {e}"}
    doc["seconds"] = time.perf_counter() - t0
    (Path(a.out) / f"{a.stage}.json").write_text(json.dumps(doc, indent=1, default=str))


def run_all(a: argparse.Namespace) -> list[dict[str, Any]]:
    """Every selected stage in its own process under its share of the budget."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work or tempfile.mkdtemp(prefix="vb-gpu-"))
    deadline = time.monotonic() + a.budget_s
    docs: list[dict[str, Any]] = []
    failed = None
    for name in [s for s in STAGES if s in a.stages.split(",")]:
        if failed:
            docs.append({"stage": name, "status": "skipped", "error": f"after {failed}"})
            continue
        left = deadline - time.monotonic()
        limit = max(10.0, min(left, SHARE[name] * a.budget_s * 1.5))
        cmd = [sys.executable, __file__, "--stage", name, "--out", str(out), "--work",
               str(work), *(["--dry-run"] if a.dry_run else []),
               *(["--e2e-from", a.e2e_from] if a.e2e_from else []),
               *(["--peak-tflops", str(a.peak_tflops)] if a.peak_tflops else [])]
        print(f"[gpu] {name} (limit {limit:.0f} s)", flush=True)
        try:
            subprocess.run(cmd, timeout=limit, check=False, cwd=ROOT)
            doc = json.loads((out / f"{name}.json").read_text())
        except subprocess.TimeoutExpired:
            doc = {"stage": name, "status": "failed", "error": f"timed out after {limit:.0f} s"}
        except (OSError, ValueError) as e:
            doc = {"stage": name, "status": "failed", "error": f"no result ({e})"}
        docs.append(doc)
        print(f"[gpu] {name}: {doc['status']} {doc.get('error', '')}", flush=True)
        if doc["status"] != "ok":
            failed = name
    (out / "results.json").write_text(json.dumps(docs, indent=1, default=str))
    (out / "results.md").write_text(markdown(docs))
    return docs


def markdown(docs: list[dict[str, Any]]) -> str:
    """The results as the Markdown that goes into BENCHMARKS.md's GPU section."""
    by = {d["stage"]: d for d in docs}
    env = by.get("env", {}).get("result", {})
    lines = [f"GPU run: {env.get('device', '?')} (bf16 peak {env.get('peak_bf16_tflops')} "
             f"TFLOP/s), torch {env.get('torch')}, faiss {env.get('faiss')} "
             f"({env.get('faiss_gpus')} GPUs){' - DRY RUN on CPU' if env.get('dry_run') else ''}",
             ""]
    for d in docs:
        if d["status"] != "ok":
            lines.append(f"- {d['stage']}: {d['status']} ({d.get('error', '')})")
    p = by.get("pretrain", {}).get("result")
    if p:
        lines += ["", "| seq | batch | side | tokens/s | model TFLOP/s | MFU | peak GiB |",
                  "|---|---|---|---|---|---|---|"]
        for r in p["rows"]:
            for side in ("videobert", "stock"):
                s = r[side]
                mfu = f"{100 * s['mfu']:.1f}%" if s["mfu"] is not None else "-"
                mem = f"{s['peak_mem_gib']:.1f}" if s["peak_mem_gib"] is not None else "-"
                lines.append(f"| {r['seq']} | {r['batch']} | {side} | {s['tokens_per_s']:,.0f} "
                             f"| {s['model_tflops']:.2f} | {mfu} | {mem} |")
            lines.append(f"| {r['seq']} | | ratio | {r['ratio']:.2f}x | | | |")
    f = by.get("features", {}).get("result")
    if f:
        lines += ["", f"I3D on {f['clips']} clips ({f['device']}, batch {f['batch']}): pipeline "
                  f"{f['pipeline_clips_per_s']:.1f} clips/s, model alone "
                  f"{f['model_clips_per_s']:.1f}, decoding alone {f['decode_clips_per_s']:.1f} "
                  f"({f['decode_workers']} workers): bound by {f['bound_by']}."]
    x = by.get("faiss", {}).get("result")
    if x:
        lines += ["", f"FAISS on {x['n']:,} x {x['d']}, {x['queries']:,} queries:", "",
                  "| side | index | build s | ms/query | recall@10 |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {x[s]['index']} | {x[s]['build_s']:.1f} | {x[s]['query_ms']:.4f} | "
                  f"{x[s]['recall_at_10']:.3f} |" for s in ("cpu", "gpu")]
        lines.append(f"\nquery speed-up GPU/CPU: {x['query_speedup']:.1f}x")
    e = by.get("e2e", {}).get("result")
    if e:
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in e["seconds"].items())
        lines += ["", f"`videobert run` end to end on {e['videos']} videos ({e['preset']}, "
                  f"{e['pretrain_steps']} + {e['finetune_steps']} steps): {e['total_s']:.0f} s "
                  f"({steps}); VideoBERT text->clip R@1 "
                  f"{_pct(e['videobert_t2v_r1'])} on {e['split']}."]
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="gpu-results", help="folder for the results")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, every code path")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 dense peak")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--e2e-from", default=None, help="dry run: copy this data home (one that "
                    "`videobert run` made) and retrain it instead of starting from nothing")
    a = ap.parse_args()
    if a.stage:
        run_stage(a)
        return
    docs = run_all(a)
    print((Path(a.out) / "results.md").read_text())
    sys.exit(0 if all(d["status"] == "ok" for d in docs) else 1)


if __name__ == "__main__":
    main()
