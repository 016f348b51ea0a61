"""Captions per second: batched beam search vs a loop of one-clip ``generate`` calls.

Same model, same clips, same settings (beam 4, ``max_len`` 32, no-repeat 3-grams, length
penalty 1), same process, after a warm-up of each:

- ``batched``: ``tasks.caption.describe.describe``, ``--batch`` clips per call (encoder once per
  clip, beams folded into the batch, one cached decoder step per token for all of them);
- ``loop``: the same code one clip at a time;
- ``hf_loop``: transformers' ``generate`` one clip at a time (its cached path; the encoder
  states passed in), what a user would write first.

The captions of ``batched`` and ``loop`` are compared (they must agree). With ``--home`` the
newest caption model of that data home and its clips are used; without, a tiny captioner on a
corpus built in memory (a trained one stops earlier: give ``--home`` for the figures).

Usage::

    python bench/caption.py --home syn-home --clips 128 --out bench/out/caption.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def _timed(fn) -> tuple[float, object]:  # noqa: ANN001 - a closure
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from models.caption_decoding import Decoding, hf_generate
    from models.videobert import text_tokenizer
    from tasks.caption.describe import describe, words

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = text_tokenizer()
    if args.home is not None:
        from flows.caption import caption_run, load_captioner
        from warehouse.store import Warehouse

        run = caption_run(Warehouse(args.home), None)
        model, clips = load_captioner(args.home, run)
        source = f"{args.home} ({run[0]})"
    else:
        from tests.test_caption import _captioner, _clipset

        model, clips, source = _captioner(), _clipset(args.clips, 0), "random tiny captioner"
    clips = clips.subset(range(min(args.clips, len(clips))))
    dec = Decoding(beams=args.beams, max_len=model.config.max_caption)
    model.eval()
    describe(model, tok, clips.subset(range(min(4, len(clips)))), dec, progress=False)
    t_batch, batched = _timed(lambda: describe(model, tok, clips, dec, batch=args.batch,
                                               progress=False))
    t_loop, looped = _timed(lambda: describe(model, tok, clips, dec, batch=1, progress=False))

    def hf_loop() -> list[str]:
        out = []
        with torch.no_grad():
            for i in range(len(clips)):
                sub = clips.subset([i])
                ids, types, mask, feats = model.encoder_inputs(sub.windows, sub.feats, "cpu")
                memory, mem_mask = model.encode(ids, types, mask, feats)
                out.append(words(tok, hf_generate(model.decoder, memory, mem_mask, dec,
                                                  use_cache=True)[0]))
        return out

    t_hf, hf = _timed(hf_loop)
    n = len(clips)
    same = sum(a[0] == b[0] for a, b in zip(batched, looped, strict=True))
    result = {
        "source": source, "clips": n, "batch": args.batch, "decoding": dec.as_dict(),
        "batched_caps_per_s": round(n / t_batch, 1), "loop_caps_per_s": round(n / t_loop, 1),
        "hf_loop_caps_per_s": round(n / t_hf, 1),
        "speedup_vs_loop": round(t_loop / t_batch, 2),
        "speedup_vs_hf_loop": round(t_hf / t_batch, 2),
        "batched_equals_loop": f"{same}/{n}",
        "mean_words": round(sum(len(c.split()) for c, _ in batched) / max(1, n), 1),
        "machine": f"{platform.machine()} {platform.processor() or ''} "
                   f"{torch.get_num_threads()} threads, torch {torch.__version__}".strip(),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
