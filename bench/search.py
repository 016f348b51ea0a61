"""FAISS search (``tasks.retrieval.index``) vs DuckDB brute force, same run, same clustered vectors.

Baseline: DuckDB's built-in ``array_cosine_similarity`` over an in-memory table
``emb(id BIGINT, vec FLOAT[512])`` loaded from Arrow, all queries of a batch in one statement
with ``max_by(id, score, 10)`` (stack.md: much faster than a window function). The table is
the fastest form DuckDB offers (a Parquet scan adds decoding), so the ratio is conservative.
DuckDB runs twice, before and after the FAISS runs, and the faster pass counts.

FAISS: every index type is built through ``tasks.retrieval.index.build_index`` (train, add,
efSearch / nprobe tuning on held-out rows, write, hash) into a temp folder, loaded back through
``load_index`` (manifest and sha256 checked), then searched with a batch of queries at the
tuned setting and over a sweep of settings; single-query latency (one ``search`` call per
query, one OpenMP thread) is reported too. recall@10 is measured against exact top-10
(``faiss.knn``, checked against numpy on a few queries); memory per vector is
``index.faiss`` bytes / n.

Data: a seeded Gaussian mixture in 512-d (n/1000 components, Zipf weights, power-law spectrum
in a random rotation), L2-normalised; queries are fresh draws from the same mixture. On iid
noise ANN recall collapses (stack.md), and real embeddings are clustered. Usage::

    python bench/search.py                                   # 100k and 1M, all index types
    python bench/search.py --sizes 100000 --kinds flat,hnsw --duckdb-queries 50
    python bench/search.py --sizes '' --text-sizes 100000   # dense vs lexical vs hybrid only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SWEEP = {"hnsw": ("efSearch", (16, 32, 64, 128, 256)),
         "ivf": ("nprobe", (4, 8, 16, 32, 64, 128)),
         "ivfpq": ("nprobe", (4, 8, 16, 32, 64, 128))}
DUCKDB_SQL = """
SELECT q.qid, max_by(e.id, array_cosine_similarity(e.vec, q.vec), {k}) AS ids
FROM queries AS q CROSS JOIN emb AS e
GROUP BY q.qid ORDER BY q.qid
"""


def make_embeddings(n: int, d: int, components: int, seed: int) -> np.ndarray:
    """Unit vectors from a seeded anisotropic Gaussian mixture (see the module doc)."""
    rng = np.random.default_rng(seed)
    spectrum = np.arange(1, d + 1, dtype=np.float64) ** -0.5
    spectrum /= np.sqrt((spectrum**2).mean())
    rot, _ = np.linalg.qr(rng.standard_normal((d, d)))
    centres = rng.standard_normal((components, d)) * spectrum
    weights = 1.0 / np.arange(1, components + 1) ** 0.8
    comp = rng.choice(components, size=n, p=weights / weights.sum())
    scale = 0.7 * rng.lognormal(0.0, 0.3, size=components)[:, None] * spectrum
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 32768):
        c = comp[s : s + 32768]
        local = (centres[c] + rng.standard_normal((len(c), d)) * scale[c]) @ rot.T
        x[s : s + len(c)] = local / np.linalg.norm(local, axis=1, keepdims=True)
    return x


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean |found[:k] & truth[:k]| / k over queries."""
    return float(np.mean([len(np.intersect1d(f[:k], t[:k])) / k
                          for f, t in zip(found, truth, strict=True)]))


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def duckdb_pass(con, q: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Seconds per query and top-k ids for one batch statement over ``q``."""
    import pyarrow as pa

    vec = pa.FixedSizeListArray.from_arrays(pa.array(q.reshape(-1)), q.shape[1])
    con.register("queries_arrow", pa.table({"qid": np.arange(len(q)), "vec": vec}))
    con.execute("CREATE OR REPLACE TEMP TABLE queries AS SELECT * FROM queries_arrow")
    t0 = time.perf_counter()
    rows = con.execute(DUCKDB_SQL.format(k=k)).fetchall()
    sec = time.perf_counter() - t0
    return sec / len(q), np.array([r[1] for r in rows], dtype=np.int64)


def duckdb_open(x: np.ndarray, threads: int):
    """An in-memory DuckDB with table ``emb(id, vec FLOAT[d])`` holding ``x``."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect(config={"threads": threads})
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    con.register("emb_arrow", pa.table({"id": np.arange(len(x), dtype=np.int64), "vec": vec}))
    con.execute("CREATE TABLE emb AS SELECT * FROM emb_arrow")
    con.unregister("emb_arrow")
    return con


def run_kind(kind: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, root: Path,
             single: int, k: int) -> dict:
    """Build, verify-load and search one index type; figures as a dict."""
    from tasks.retrieval import index as ix

    n, d = x.shape
    spec = ix.make_spec(kind, n, d)
    items = [str(i) for i in range(n)]
    t0 = time.perf_counter()
    info = ix.build_index(x, items, items, spec, root, encoder="bench", model_run=f"{n}",
                          level=kind, publish=False)
    build_total = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded = ix.load_index(info.path, {"encoder": "bench", "d": d})
    load_s = time.perf_counter() - t0
    out = {"kind": kind, "factory": spec.factory, "build_s": info.build_s,
           "build_total_s": build_total, "load_s": load_s,
           "bytes_per_vector": (info.path / "index.faiss").stat().st_size / n,
           "params": {p: info.params[p] for p in ("efSearch", "nprobe", "tune_recall")
                      if p in info.params}, "sweep": []}
    name, values = SWEEP.get(kind, (None, ()))
    for v in values:
        loaded.set_search_params(**{name: v})
        sec, (_, rows) = timed(lambda: loaded.search_rows(q, k))
        out["sweep"].append({name: v, "ms_per_query": 1e3 * sec / len(q),
                             "recall": recall_at(rows, truth, k)})
    if name:
        loaded.set_search_params(**{name: info.params[name]})
    sec, (_, rows) = timed(lambda: loaded.search_rows(q, k), 1 if kind == "flat" else 3)
    out |= {"ms_per_query": 1e3 * sec / len(q), "recall": recall_at(rows, truth, k)}
    # One query per call on one thread, as a server handles a request: with 2 OpenMP threads
    # on a busy 2-core machine a single Flat query spins for ~10x longer than it computes.
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    for i in range(single):
        loaded.search_rows(q[i : i + 1], k)
    out["single_ms"] = 1e3 * (time.perf_counter() - t0) / single
    faiss.omp_set_num_threads(threads)
    return out


def exact_truth(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows by inner product (faiss.knn), spot-checked with numpy."""
    import faiss

    _, rows = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)
    s = q[:5] @ x.T
    np_rows = np.argsort(-s, axis=1)[:, :k]
    assert recall_at(rows[:5], np_rows, k) > 0.99, "faiss.knn disagrees with numpy"
    return rows


def bench_size(n: int, args: argparse.Namespace) -> dict:
    """All figures for one collection size."""
    d, k = args.dim, 10
    t0 = time.perf_counter()
    allx = make_embeddings(n + args.queries, d, max(50, n // 1000), args.seed)
    x, q = allx[:n], allx[n:]
    print(f"[{n}] data {time.perf_counter() - t0:.1f} s", flush=True)
    truth = exact_truth(x, q, k)
    con = duckdb_open(x, args.threads)
    dq = q[: args.duckdb_queries]
    duck = [duckdb_pass(con, dq, k)]
    print(f"[{n}] duckdb {1e3 * duck[0][0]:.1f} ms/query", flush=True)
    kinds = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for kind in args.kinds.split(","):
            r = run_kind(kind, x, q, truth, Path(tmp), args.single, k)
            kinds.append(r)
            print(f"[{n}] {json.dumps(r)}", flush=True)
    duck.append(duckdb_pass(con, dq, k))
    con.close()
    best = min(duck, key=lambda t: t[0])
    return {"n": n, "d": d, "queries": len(q), "duckdb_queries": len(dq),
            "duckdb_ms_per_query": [1e3 * t[0] for t in duck],
            "duckdb_recall": recall_at(best[1], truth[: len(dq)], k), "kinds": kinds}


def make_texts(n: int, seed: int, words: int = 12) -> list[str]:
    """``n`` clip texts of ~``words`` words from a Zipf vocabulary of 20k made-up words (real
    speech is Zipfian too), seeded."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(20000)]
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.07
    ids = rng.choice(len(vocab), size=(n, words), p=p / p.sum())
    return [" ".join(vocab[i] for i in row) for row in ids]


def bench_text(n: int, args: argparse.Namespace) -> dict:
    """Single-query latency of dense, lexical and hybrid search over ``n`` clips, same run.

    Dense: the clip index (``build_index``, the type ``choose_index`` picks for n) searched
    for the top 100; lexical: the published BM25 index (``build_lexical`` over an in-memory
    DuckDB of n clips with one text each) for the top 100; hybrid: both plus
    ``rank_hybrid`` (the union fused, cosines of lexical-only clips from the vectors), as
    ``videobert search`` does before joining the hits with the warehouse (same for every
    mode, so left out). Queries: 3 words of a held-out clip's text, embedded as that clip's
    vector plus noise.
    """
    import duckdb

    from tasks.retrieval import index as ix
    from tasks.retrieval import lexical

    rng = np.random.default_rng(args.seed + 1)
    texts = make_texts(n, args.seed)
    x = make_embeddings(n, 256, max(50, n // 1000), args.seed)
    ids = [f"c{i}" for i in range(n)]
    con = duckdb.connect()
    con.execute("CREATE TABLE clips AS SELECT 'c' || i AS clip_id, 'v' || (i // 8) AS video_id,"
                " 1.5 * (i % 8) AS start_s, 1.5 * (i % 8) + 1.5 AS end_s FROM range(?) t(i)",
                [n])
    con.execute("CREATE TABLE text_segments AS SELECT 's' || i AS segment_id, "
                "'v' || (i // 8) AS video_id, 1.5 * (i % 8) AS start_s, 1.5 * (i % 8) + 1.4 "
                "AS end_s, t AS text, 'srt' AS source, NULL::VARCHAR AS meta_json FROM "
                "(SELECT unnest(?::VARCHAR[]) AS t, generate_subscripts(?::VARCHAR[], 1) - 1 "
                "AS i)", [texts, texts])
    out: dict = {"n": n}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        lexical.build_lexical(con, {"clips": [], "text_segments": []}, Path(tmp))
        out["lexical_build_s"] = time.perf_counter() - t0
        lex = lexical.load_current_lexical(Path(tmp))
        spec = ix.choose_index(n, x.shape[1], 4096 << 20)
        info = ix.build_index(x, ids, ids, spec, Path(tmp), encoder="bench", model_run="t",
                              level="clip")
        dense_ix = ix.load_index(info.path)
        out["dense_index"] = spec.factory
        picks = rng.integers(0, n, args.text_queries)
        queries = [" ".join(texts[i].split()[:3]) for i in picks]
        qv = x[picks] + 0.05 * rng.standard_normal((len(picks), x.shape[1])).astype(np.float32)
        at = {c: i for i, c in enumerate(ids)}

        def dense(i: int) -> dict[str, float]:
            sc, found = dense_ix.search(qv[i], 100)
            return {str(c): float(v) for c, v in zip(found[0], sc[0], strict=True)}

        def cosines(i: int, cs: list[str]) -> dict[str, float]:
            return {c: float(x[at[c]] @ qv[i]) for c in cs}

        def hybrid(i: int) -> list:
            return lexical.rank_hybrid(dense(i), lex.search(queries[i], 100),
                                       lambda cs: cosines(i, cs), 0.5, 10)

        import faiss

        faiss.omp_set_num_threads(1)
        for name, fn in (("dense", dense), ("lexical", lambda i: lex.search(queries[i], 100)),
                         ("hybrid", hybrid)):
            fn(0)  # warm
            times = []
            for i in range(len(queries)):
                t0 = time.perf_counter()
                fn(i)
                times.append(1e3 * (time.perf_counter() - t0))
            out[f"{name}_ms"] = statistics.median(times)
            out[f"{name}_p95_ms"] = float(np.percentile(times, 95))
        faiss.omp_set_num_threads(args.threads)
        hits = sum(any(c == f"c{p}" for c, _, _ in hybrid(i)) for i, p in enumerate(picks))
        out["hybrid_found_share"] = hits / len(picks)
    con.close()
    return out


def report_text(r: dict) -> None:
    """Print the text benchmark's table."""
    print(f"\n## {r['n']:,} clips' text: lexical index built in {r['lexical_build_s']:.1f} s; "
          f"dense index {r['dense_index']}; single queries, one thread")
    print("| mode | median ms | p95 ms | x dense |")
    print("|---|---|---|---|")
    for m in ("dense", "lexical", "hybrid"):
        print(f"| {m} | {r[m + '_ms']:.2f} | {r[m + '_p95_ms']:.2f} | "
              f"{r[m + '_ms'] / r['dense_ms']:.2f} |")
    print(f"(hybrid finds the clip whose words were queried in its top 10 for "
          f"{100 * r['hybrid_found_share']:.0f}% of queries)")


def machine() -> str:
    """One line: CPU model, cores, load, library versions."""
    import duckdb
    import faiss

    model = platform.processor() or "cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return (f"{model}, {os.cpu_count()} cores (load {load:.1f}), python "
            f"{platform.python_version()}, faiss {faiss.__version__} "
            f"({faiss.get_num_gpus()} GPUs), duckdb {duckdb.__version__}")


def report(res: dict) -> None:
    """Print the summary table: per index type, figures and the ratio to DuckDB."""
    duck = min(res["duckdb_ms_per_query"])
    print(f"\n## n = {res['n']:,} x {res['d']}: DuckDB brute force "
          f"{duck:.1f} ms/query (passes: "
          f"{', '.join(f'{v:.1f}' for v in res['duckdb_ms_per_query'])}), "
          f"recall@10 {res['duckdb_recall']:.3f}, {res['duckdb_queries']} queries")
    print("| index | params | build s | B/vector | ms/query (batch) | recall@10 | "
          "x DuckDB | ms/query (single) | x DuckDB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in res["kinds"]:
        p = ", ".join(f"{a} {b}" for a, b in r["params"].items() if a != "tune_recall")
        print(f"| {r['factory']} | {p or 'exact'} | {r['build_s']:.1f} | "
              f"{r['bytes_per_vector']:,.0f} | {r['ms_per_query']:.4f} | {r['recall']:.3f} | "
              f"**{duck / r['ms_per_query']:,.0f}** | {r['single_ms']:.3f} | "
              f"{duck / r['single_ms']:,.0f} |")
    for r in res["kinds"]:
        if r["sweep"]:
            cells = "; ".join(f"{list(s.values())[0]}: {s['recall']:.3f} @ "
                              f"{s['ms_per_query']:.4f} ms" for s in r["sweep"])
            print(f"- {r['factory']} sweep ({list(r['sweep'][0])[0]}: recall@10 @ "
                  f"ms/query): {cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--kinds", default="flat,hnsw,ivf,ivfpq")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000, help="FAISS batch size")
    ap.add_argument("--duckdb-queries", type=int, default=0,
                    help="DuckDB queries per pass (default: 100 up to 100k vectors, else 20)")
    ap.add_argument("--single", type=int, default=200, help="queries timed one call each")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for the temporary index files")
    ap.add_argument("--json", default=None, help="write all figures to this file")
    ap.add_argument("--text-sizes", default="100000",
                    help="clip counts for dense vs lexical vs hybrid query latency ('' skips)")
    ap.add_argument("--text-queries", type=int, default=200)
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    print(machine(), flush=True)
    text_results = []
    for n in (int(s) for s in args.text_sizes.split(",") if s):
        text_results.append(bench_text(n, args))
        report_text(text_results[-1])
    results = []
    for n in (int(s) for s in args.sizes.split(",") if s):
        sub = argparse.Namespace(**vars(args))
        sub.duckdb_queries = args.duckdb_queries or (100 if n <= 100_000 else 20)
        results.append(bench_size(n, sub))
        report(results[-1])
    print("\n" + machine())
    for res in results:
        report(res)
    for res in text_results:
        report_text(res)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results,
                                               "text": text_results}, indent=1))


if __name__ == "__main__":
    main()
