"""Re-ranking cost per query: the dual encoder's search alone vs search + cross-encoder top-N.

Both run in this process on the same published index and the same queries (the split's
captions), after one warm-up query each: ``search`` embeds the query (NumPy text tower on CPU)
and asks FAISS; ``search --rerank`` adds the alignment head over the top ``--top`` candidates
(torch, clip features included) and the fusion. Prints ms per query (median and p95) and the
ratio, with the machine.

Usage (a data home where ``videobert finetune`` and ``videobert index`` ran)::

    python bench/rerank.py --home syn-home --split test --top 20 --out bench/out/rerank.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path


def _times(fn, queries: list[str]) -> list[float]:  # noqa: ANN001 - a search closure
    fn(queries[0])  # warm-up (first torch call, caches)
    out = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"median_ms": round(statistics.median(s), 2),
            "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 2), "n": len(s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--top", type=int, default=20, help="candidates re-ranked")
    ap.add_argument("-k", type=int, default=10, help="results per query")
    ap.add_argument("--queries", type=int, default=100, help="at most this many captions")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from tasks.retrieval.search import open_searcher, search
    from warehouse.store import Warehouse

    torch.set_num_threads(max(1, torch.get_num_threads()))
    home = args.home.resolve()
    con = Warehouse(home).connect_published()
    queries = [r[0] for r in con.execute(
        "SELECT t.text FROM text_segments t JOIN splits s USING (video_id) WHERE s.split = ? "
        "ORDER BY t.segment_id LIMIT ?", [args.split, args.queries]).fetchall()]
    con.close()
    if not queries:
        raise SystemExit(f"no captions in the {args.split} split of {home}")
    s = open_searcher(home, device="cpu", rerank=True)
    dual = _summary(_times(lambda q: search(home, s, q, args.k), queries))
    rerank = _summary(_times(lambda q: search(home, s, q, args.k, rerank=True,
                                              rerank_top=args.top), queries))
    report = {"machine": f"{platform.machine()}, {platform.processor() or '?'}, "
                         f"{torch.get_num_threads()} torch threads",
              "top": args.top, "k": args.k, "dual": dual, "dual+rerank": rerank,
              "rerank_added_ms": round(rerank["median_ms"] - dual["median_ms"], 2),
              "ratio": round(rerank["median_ms"] / dual["median_ms"], 2)}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
