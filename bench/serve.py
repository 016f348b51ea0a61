"""``videobert serve``'s ``/api/search`` under concurrent clients vs cold ``videobert search``
processes, same run, same data home and queries.

- **serve**: one ``videobert serve`` process on loopback; ``--clients`` threads each send
  ``--requests`` GET ``/api/search?q=...&k=10`` (queries cycled from the corpus's captions),
  one at a time per client. Latency per request (p50/p95) and requests/s over the whole load.
- **cold**: ``videobert search QUERY --format json`` as a fresh process per request (what a
  script without the server pays), ``--clients`` at a time, ``--cold-requests`` in all (fewer
  than the server's: each takes about half a second).

Target (issue 16): serve p95 < 50 ms on the sample corpus on 2 CPU cores. Usage::

    python bench/serve.py                      # builds a home with `videobert run` first
    python bench/serve.py --home HOME --clients 8 --requests 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"VIDEOBERT_HOME": str(home), "DO_NOT_TRACK": "1"}


def _queries(home: Path, n: int) -> list[str]:
    from warehouse.store import Warehouse

    con = Warehouse(home).connect()
    texts = [r[0] for r in con.execute("SELECT DISTINCT text FROM text_segments ORDER BY 1")
             .fetchall()]
    con.close()
    return [" ".join(t.split()[:6]) for t in texts][:n] or ["a car"]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def bench_serve(home: Path, queries: list[str], clients: int, requests: int) -> dict:
    """Latencies of /api/search under ``clients`` concurrent clients."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "videobert.cli", "serve", "--port",
                             str(port)], env=_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/api/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.25)
        url = [f"{base}/api/search?" + urllib.parse.urlencode({"q": q, "k": 10})
               for q in queries]
        urllib.request.urlopen(url[0], timeout=60).read()  # loads the encoder and index once
        lat: list[float] = []
        lock = threading.Lock()

        def client(c: int) -> None:
            mine = []
            for i in range(requests):
                t0 = time.perf_counter()
                urllib.request.urlopen(url[(c * requests + i) % len(url)], timeout=60).read()
                mine.append(time.perf_counter() - t0)
            with lock:
                lat.extend(mine)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"requests": len(lat), "rps": len(lat) / wall, "p50_ms": 1e3 * _pct(lat, 0.5),
            "p95_ms": 1e3 * _pct(lat, 0.95), "max_ms": 1e3 * max(lat)}


def bench_cold(home: Path, queries: list[str], clients: int, n: int) -> dict:
    """Latencies of cold ``videobert search`` processes, ``clients`` at a time."""
    def one(i: int) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "videobert.cli", "search", queries[i % len(queries)],
                        "-k", "10", "--format", "json"], env=_env(home), check=True,
                       capture_output=True)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    return {"requests": n, "rps": n / wall, "p50_ms": 1e3 * _pct(lat, 0.5),
            "p95_ms": 1e3 * _pct(lat, 0.95), "max_ms": 1e3 * max(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, default=None, help="a data home with an index")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="per client (serve)")
    ap.add_argument("--cold-requests", type=int, default=40, help="in all (cold processes)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    home = a.home
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="vb-bench-serve-")) / "home"
        subprocess.run([sys.executable, "-m", "videobert.cli", "run", "--pretrain-steps", "5",
                        "--finetune-steps", "5"], env=_env(home), check=True,
                       capture_output=True)
    queries = _queries(home, 50)
    serve = bench_serve(home, queries, a.clients, a.requests)
    cold = bench_cold(home, queries, a.clients, a.cold_requests)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores (load "
               f"{os.getloadavg()[0]:.1f}), Python {platform.python_version()}")
    print(f"{machine}; {a.clients} clients; {len(queries)} distinct queries")
    print("| path | requests | req/s | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for name, r in (("serve /api/search", serve), ("cold videobert search", cold)):
        print(f"| {name} | {r['requests']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | "
              f"{r['p95_ms']:.1f} | {r['max_ms']:.1f} |")
    print(f"throughput ratio serve / cold: {serve['rps'] / cold['rps']:.1f}x; serve p95 "
          f"{serve['p95_ms']:.1f} ms (target < 50: {'MET' if serve['p95_ms'] < 50 else 'NOT MET'})")
    if a.json:
        a.json.write_text(json.dumps({"machine": machine, "serve": serve, "cold": cold},
                                     indent=1))


if __name__ == "__main__":
    main()
