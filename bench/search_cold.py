"""Cold ``videobert search`` latency: the NumPy query path vs the torch query path, same run.

Each side is a fresh Python process (what a user typing ``videobert search`` pays), on the same
data home, the same query, alternating:

- **videobert**: ``videobert search QUERY --home HOME -f json`` as shipped: the live model's
  text tower in NumPy (``models/text_numpy.py``), the published catalog, the FAISS index.
- **torch**: the same search with the query embedded the way it was before, by the torch model
  (``VideoBert.from_pretrained`` + ``BertTokenizerFast`` + ``embed_texts``; importing torch and
  transformers), through
  ``tasks.retrieval.search.open_searcher(device="cpu", rerank=True)`` (which loads it) with the
  torch model as the query encoder.

Both print the same hits (checked). Usage::

    python bench/search_cold.py                    # builds a home with `videobert run` first
    python bench/search_cold.py --home HOME --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TORCH_SIDE = """
import json, sys
from pathlib import Path
from tasks.retrieval.search import open_searcher, search
from tasks.retrieval.finetune import embed_texts
home, query = Path(sys.argv[1]), sys.argv[2]
s = open_searcher(home, rerank=True)          # loads the torch model and its tokenizer
model, tok = s.torch_model()
s.embed = lambda texts: embed_texts(model, tok, texts)
print(json.dumps(search(home, s, query, 10)))
"""


def _timed(cmd: list[str]) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return time.perf_counter() - t0, json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=None,
                    help="a data home with a fine-tuned model (default: run the sample corpus)")
    ap.add_argument("--query", default="a man talking in a car")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    home = args.home
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="vb-bench-search-")) / "home"
        subprocess.run([sys.executable, "-m", "videobert.cli", "run", "--home", str(home)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    ours_cmd = [sys.executable, "-m", "videobert.cli", "search", args.query, "--home",
                str(home), "-k", "10", "-f", "json"]
    torch_cmd = [sys.executable, "-c", TORCH_SIDE, str(home), args.query]
    ours, base = [], []
    for i in range(args.repeats):
        order = [(ours_cmd, ours), (torch_cmd, base)]
        for cmd, acc in (order if i % 2 == 0 else order[::-1]):
            dt, hits = _timed(cmd)
            acc.append((dt, [h["clip_id"] for h in hits]))
    assert ours[0][1] == base[0][1], "the two query paths returned different hits"
    t_ours = statistics.median(d for d, _ in ours)
    t_base = statistics.median(d for d, _ in base)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"Python {platform.python_version()}")
    print(f"machine: {machine}; home {home}; query {args.query!r}; median of {args.repeats}")
    print("| query path | cold process s |")
    print("|---|---|")
    print(f"| videobert search (NumPy text tower) | {t_ours:.2f} |")
    print(f"| torch model (before) | {t_base:.2f} |")
    print(f"speed-up {t_base / t_ours:.1f}x; same top-10: yes")


if __name__ == "__main__":
    main()
