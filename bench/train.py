"""Pretraining step throughput: our trainer's step vs a stock ``BertForMaskedLM`` loop.

Both sides train the SAME architecture size (hidden, layers, heads, FFN, vocabulary
30522 + 1 + n_visual) on the SAME sequences (joint ``[CLS] text [>] video [SEP]``, 15% of the
non-special positions masked) with the same batch size, alternating step by step in one
process (so both see the same load on a shared machine):

- **videobert**: ``VideoBert.loss`` (MLM head only at the masked positions, each modality scored
  over its own vocabulary slice, plus the alignment head), AdamW from ``tasks.pretrain.train``
  (fused, on CPU too), bf16 autocast on CUDA, gradient clipping, and length-bucketed
  batches (sequences sorted by length, cut into batches, batch order shuffled; each batch
  padded to its own longest sequence).
- **stock**: ``transformers.BertForMaskedLM`` with its own loss (decoder over the full
  vocabulary at every position, labels -100 off the masked positions), ``torch.optim.AdamW``
  with its defaults, the same clipping, batches in random order padded to their longest
  sequence (what ``DataCollatorForLanguageModeling`` does).

Throughput is real (non-pad) tokens per second; ratio = videobert / stock (target >= 2.5x on
CPU). ``--lengths fixed`` makes every sequence ``--seq`` long (no padding on either side: the
gain is the loss head and optimiser alone).

On CUDA it also measures the ``base`` preset at seq 128 and 512 in bf16 (``--mfu``): tokens/s,
model FLOPs utilisation = (6 x non-embedding params + 12 x layers x hidden x seq) x tokens/s
over the GPU's bf16 dense peak (``--peak-tflops``, else looked up from the device name), and
peak memory. Usage::

    python bench/train.py --layers 4 --hidden 256 --heads 4 --batch 32 --seq 128 --threads 2
    python bench/train.py --mfu --peak-tflops 989      # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.vocab import CLS, MASK, PAD, SEP, TEXT_VOCAB, VIS_OFFSET, VSEP  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0,
                    "L40S": 362.0, "L4": 121.0, "A10": 125.0, "4090": 165.0}
"""Dense bf16 tensor-core peaks (no sparsity), matched by substring of the device name."""


def machine(device: torch.device) -> str:
    """One line naming the machine."""
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if device.type == "cuda":
        cpu += f", {torch.cuda.get_device_name(device)}"
    return (f"{cpu}, python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def make_sequences(n: int, seq: int, n_visual: int, fixed: bool,
                   rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n`` joint sequences: (ids, token types, masked positions), text then video tokens."""
    out = []
    for _ in range(n):
        length = seq if fixed else int(rng.integers(seq // 4, seq + 1))
        n_text = int(rng.integers(1, length - 4))
        n_video = length - 3 - n_text
        ids = np.concatenate([[CLS], rng.integers(999, TEXT_VOCAB, n_text), [VSEP],
                              VIS_OFFSET + rng.integers(0, n_visual, n_video), [SEP]])
        types = np.r_[np.zeros(1 + n_text, np.int64), np.ones(n_video + 2, np.int64)]
        content = np.r_[1:1 + n_text, 2 + n_text:2 + n_text + n_video]
        k = max(1, round(0.15 * len(content)))
        out.append((ids.astype(np.int64), types, np.sort(rng.choice(content, k, replace=False))))
    return out


def collate(seqs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Pad to the longest; both sides' inputs (ours: flat mlm_pos; stock: labels)."""
    B, T = len(seqs), max(len(s[0]) for s in seqs)
    ids = torch.full((B, T), PAD, dtype=torch.long)
    types = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.bool)
    labels = torch.full((B, T), -100, dtype=torch.long)
    pos = []
    for i, (x, t, m) in enumerate(seqs):
        ids[i, :len(x)], types[i, :len(x)], mask[i, :len(x)] = (torch.from_numpy(x),
                                                                torch.from_numpy(t), True)
        labels[i, m] = torch.from_numpy(x[m])
        pos.append(torch.from_numpy(m) + i * T)
    mlm_pos = torch.cat(pos)
    mlm_labels = ids.view(-1)[mlm_pos]
    inputs = ids.clone()
    inputs.view(-1)[mlm_pos] = MASK
    return {"input_ids": inputs, "token_type_ids": types, "attention_mask": mask,
            "mlm_pos": mlm_pos, "mlm_labels": mlm_labels, "mlm_is_video": mlm_labels >= VIS_OFFSET,
            "align_labels": torch.ones(B, dtype=torch.long), "labels": labels,
            "n_tokens": int(mask.sum())}


def batches(seqs: list, batch: int, bucketed: bool, rng: np.random.Generator) -> list[dict]:
    """Cut sequences into batches: sorted by length then shuffled (bucketed), or as given."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0])) if bucketed \
        else list(range(len(seqs)))
    out = [collate([seqs[i] for i in order[s:s + batch]])
           for s in range(0, len(order) - batch + 1, batch)]
    if bucketed:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def ours(cfg: dict[str, Any], n_visual: int, device: torch.device, compile_: bool) -> tuple:
    """VideoBert + the trainer's optimiser; returns (step function, model)."""
    from models.videobert import VideoBert, config_for
    from tasks.pretrain.train import TrainConfig, autocast, make_optimizer, to_device

    model = VideoBert(config_for("tiny", n_visual, dropout=0.1, **cfg)).to(device).train()
    opt = make_optimizer(model, TrainConfig(lr=1e-4), device)
    fwd = torch.compile(model) if compile_ else model

    def step(b: dict[str, Any]) -> None:
        b = to_device({k: v for k, v in b.items() if k != "labels"}, device)
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss, _ = fwd(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()

    return step, model


def stock(cfg: dict[str, Any], n_visual: int, device: torch.device) -> tuple:
    """transformers' BertForMaskedLM with its full-vocabulary loss and default AdamW."""
    from transformers import BertConfig, BertForMaskedLM

    bc = BertConfig(vocab_size=TEXT_VOCAB + 1 + n_visual, hidden_size=cfg["hidden"],
                    num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
                    intermediate_size=cfg["intermediate"], max_position_embeddings=512,
                    type_vocab_size=2)
    model = BertForMaskedLM(bc).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None

    def step(b: dict[str, Any]) -> None:
        args = {k: b[k].to(device) for k in ("input_ids", "token_type_ids", "labels")}
        args["attention_mask"] = b["attention_mask"].to(device).long()
        opt.zero_grad(set_to_none=True)
        if amp is not None:
            with amp:
                loss = model(**args).loss
        else:
            loss = model(**args).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step, model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Any, batch: dict[str, Any], device: torch.device) -> tuple[float, float]:
    """Wall and process-CPU seconds of one ``step`` on ``batch`` (CPU time drifts less with
    other load on a shared machine)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    step(batch)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def rate(step: Any, data: list[dict], device: torch.device) -> float:
    """Tokens per wall second of ``step`` over ``data``."""
    wall = sum(timed(step, b, device)[0] for b in data)
    return sum(b["n_tokens"] for b in data) / wall


def compare(a: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Alternating rounds of both loops on the same sequences; medians and the ratio."""
    cfg = {"hidden": a.hidden, "layers": a.layers, "heads": a.heads,
           "intermediate": a.intermediate or 4 * a.hidden}
    rng = np.random.default_rng(0)
    seqs = make_sequences(a.batch * a.steps, a.seq, a.n_visual, a.lengths == "fixed", rng)
    mine = batches(seqs, a.batch, bucketed=True, rng=rng)
    theirs = batches(seqs, a.batch, bucketed=False, rng=rng)
    torch.manual_seed(0)
    ours_step, _ = ours(cfg, a.n_visual, device, a.compile)
    stock_step, _ = stock(cfg, a.n_visual, device)
    for _ in range(2):  # warm-up (allocator, kernels, compile)
        ours_step(mine[0])
        stock_step(theirs[0])
    tokens = sum(b["n_tokens"] for b in mine)
    rates: dict[str, list[tuple[float, float]]] = {"videobert": [], "stock": []}
    for _ in range(a.rounds):  # alternate step by step: both sides see the same load
        spent = {"videobert": [0.0, 0.0], "stock": [0.0, 0.0]}
        for ob, sb in zip(mine, theirs, strict=True):
            for name, step, b in (("videobert", ours_step, ob), ("stock", stock_step, sb)):
                w, c = timed(step, b, device)
                spent[name][0] += w
                spent[name][1] += c
        for name, (w, c) in spent.items():
            rates[name].append((tokens / w, tokens / c))
    med = {k: statistics.median(r[0] for r in v) for k, v in rates.items()}
    cpu = {k: statistics.median(r[1] for r in v) for k, v in rates.items()}
    pad = {k: 1 - sum(b["n_tokens"] for b in d) / sum(b["input_ids"].numel() for b in d)
           for k, d in (("videobert", mine), ("stock", theirs))}
    return {"config": cfg, "batch": a.batch, "seq": a.seq, "lengths": a.lengths,
            "vocab": TEXT_VOCAB + 1 + a.n_visual, "steps_per_round": len(mine),
            "tokens_per_s": med, "tokens_per_cpu_s": cpu, "rounds": rates,
            "padding_share": pad, "ratio": med["videobert"] / med["stock"],
            "ratio_cpu_time": cpu["videobert"] / cpu["stock"]}


def mfu(a: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """The ``base`` preset in bf16 at seq 128 and 512: tokens/s, MFU, peak memory."""
    from models.videobert import PRESETS

    name = torch.cuda.get_device_name(device)
    peak = a.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    base = {k: PRESETS["base"][k] for k in ("hidden", "layers", "heads", "intermediate")}
    out = []
    for seq, batch in ((128, a.mfu_batch_128), (512, a.mfu_batch_512)):
        rng = np.random.default_rng(seq)
        data = batches(make_sequences(batch * a.steps, seq, a.n_visual, True, rng), batch,
                       bucketed=True, rng=rng)
        torch.cuda.reset_peak_memory_stats(device)
        step, model = ours(base, a.n_visual, device, a.compile)
        for b in data[:3]:
            step(b)
        tps = statistics.median(rate(step, data, device) for _ in range(a.rounds))
        embed = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
        n_params = sum(p.numel() for p in model.parameters()) - embed
        flops_tok = 6 * n_params + 12 * base["layers"] * base["hidden"] * seq
        out.append({"seq": seq, "batch": batch, "tokens_per_s": tps,
                    "non_embedding_params": n_params, "model_tflops": flops_tok * tps / 1e12,
                    "mfu": flops_tok * tps / (peak * 1e12) if peak else None,
                    "peak_tflops": peak, "peak_mem_gib": torch.cuda.max_memory_allocated(
                        device) / 2**30})
        del step, model
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=None, help="default 4 x hidden")
    ap.add_argument("--n-visual", type=int, default=20736, help="visual tokens (12^4)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lengths", choices=["mixed", "fixed"], default="mixed",
                    help="mixed: lengths uniform in [seq/4, seq]; fixed: all seq long")
    ap.add_argument("--steps", type=int, default=8, help="batches per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model")
    ap.add_argument("--mfu", action="store_true", help="CUDA: base preset MFU at 128 and 512")
    ap.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 dense peak")
    ap.add_argument("--mfu-batch-128", type=int, default=128)
    ap.add_argument("--mfu-batch-512", type=int, default=32)
    a = ap.parse_args()
    from models.device import pick_device

    if a.threads:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    print(f"machine: {machine(device)}")
    res = compare(a, device)
    print(json.dumps(res, indent=1))
    print(f"tokens/s: videobert {res['tokens_per_s']['videobert']:.0f}, stock "
          f"{res['tokens_per_s']['stock']:.0f}  ratio {res['ratio']:.2f}x "
          f"(per CPU second: {res['ratio_cpu_time']:.2f}x)")
    if a.mfu:
        if device.type != "cuda":
            print("--mfu needs a CUDA device; skipped")
            return
        for r in mfu(a, device):
            mfu_s = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (--peak-tflops)"
            print(f"base seq {r['seq']} batch {r['batch']}: {r['tokens_per_s']:.0f} tokens/s, "
                  f"{r['model_tflops']:.1f} TFLOP/s, MFU {mfu_s}, "
                  f"peak memory {r['peak_mem_gib']:.1f} GiB")


if __name__ == "__main__":
    main()
