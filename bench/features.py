"""Feature extraction: the tokenize pipeline vs a bare model-forward loop, same run.

- **pipeline**: :func:`tasks.tokens.features.encode_clips` on the sample corpus' clips: parallel
  ffmpeg decoding by timestamp overlapped with batched I3D forward passes (what the tokenize
  flow runs per task).
- **bare**: the same I3D forward passes over the same clips, pre-decoded into memory
  beforehand (decode time excluded): the model's own speed, the ceiling for the pipeline.

Ratio = pipeline clips/s / bare clips/s (target >= 0.9 on CPU). On a GPU machine it also
reports clips/s and the share of the model's FLOP ceiling (bf16 dense peak) reached.

    python bench/features.py [--repeats 3] [--batch-size 8] [--clips 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.tokens.encoders import I3DEncoder  # noqa: E402
from tasks.tokens.features import ClipRef, encode_clips, read_clips  # noqa: E402

H100_BF16_PEAK = 989e12


def sample_clips(root: Path, n: int) -> list[ClipRef]:
    """Consecutive 1.5 s clips of the sample corpus' videos (cycled up to n)."""
    from tasks.shared import media

    refs: list[ClipRef] = []
    videos = sorted(p for p in root.iterdir() if p.suffix in (".mp4", ".mkv", ".mpg"))
    while len(refs) < n:
        for v in videos:
            dur = media.probe(v).duration_s or 0
            k = 0
            while (k + 1) * 1.5 <= dur and len(refs) < n:
                refs.append(ClipRef(f"{v.stem}-{len(refs)}", f"{v.stem}-{len(refs) // 64}",
                                    str(v), k * 1.5, (k + 1) * 1.5))
                k += 1
    return refs[:n]


def i3d_flops_per_clip(enc: I3DEncoder) -> float:
    """Forward FLOPs of one 16 x 224 x 224 clip, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 16, 256, 256, 3, dtype=torch.uint8).numpy()
    with FlopCounterMode(display=False) as fc:
        enc.encode(x)
    return float(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    from tasks.ingest.samples import build_sample_corpus

    work = Path(tempfile.mkdtemp(prefix="vb-bench-features-"))
    corpus = build_sample_corpus(work / "samples")
    enc = I3DEncoder(Path(os.environ.get("VIDEOBERT_WEIGHTS", work / "weights")), args.device)
    clips = sample_clips(corpus.root, args.clips)
    decoded = np.stack([f for _, f, _ in read_clips(clips, enc.n_frames, enc.size, 1.5,
                                                    workers=args.workers)])
    enc.encode(decoded[: args.batch_size])  # warm-up
    pipe, bare = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        rows, fails = encode_clips(enc, clips, 1.5, batch_size=args.batch_size,
                                   workers=args.workers)
        pipe.append(time.perf_counter() - t0)
        assert len(rows) == len(clips) and not fails
        t0 = time.perf_counter()
        for s in range(0, len(decoded), args.batch_size):
            enc.encode(decoded[s:s + args.batch_size])
        bare.append(time.perf_counter() - t0)
    tp, tb = statistics.median(pipe), statistics.median(bare)
    dev = enc.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, " \
        f"{torch.get_num_threads()} torch threads"
    print(f"device: {name}; I3D, {args.clips} clips of 16 x 224 px, batch {args.batch_size}, "
          f"{args.workers} decode workers, median of {args.repeats}")
    print("| path | s | clips/s |")
    print("|---|---|---|")
    print(f"| pipeline (decode + model, overlapped) | {tp:.2f} | {len(clips) / tp:.2f} |")
    print(f"| bare model-forward loop (pre-decoded) | {tb:.2f} | {len(clips) / tb:.2f} |")
    print(f"ratio pipeline / bare: {tb / tp:.3f}")
    flops = i3d_flops_per_clip(enc)
    print(f"I3D forward: {flops / 1e9:.1f} GFLOP per clip")
    if dev.type == "cuda":
        print(f"share of bf16 dense peak (H100 989 TFLOP/s): "
              f"{flops * len(clips) / tp / H100_BF16_PEAK:.1%}")


if __name__ == "__main__":
    main()
