"""Prefect's share of the nightly run's wall time, and task runs as the corpus grows 10x.

**Overhead.** The nightly flow (``videobert run``'s parameters) runs in this process on a fresh
data home with the sample corpus, on Prefect's real engine and temporary server (its start, on
a fresh database, is printed apart: a deployment run does not pay it). Every 20 ms a sampler
thread snapshots all threads' stacks at once and gives the wall time since the last snapshot
to one side, walking the main thread (flows and directly called tasks) from its innermost frame
out to the first frame of our code (flows/, tasks/, models/, warehouse/, videobert/): no
Prefect-stack frame on the way (prefect, httpx, httpcore, anyio, sqlalchemy, uvicorn,
starlette, fastapi...): **ours** (torch, DuckDB, ffmpeg under our code are ours); a Prefect
frame on the way, or no frame of ours: **Prefect** (run creation, states, API calls, logs,
artifacts, heartbeats), except a wait on a Prefect future (the flow waits for its tasks):
**ours** if another thread is in our code at that instant (a task body, its decoders), else
**Prefect** (only task-engine bookkeeping, or nothing, runs). The stage is the innermost flow
being called. Prefect's background threads and server are off this critical path (their CPU is
printed). The run uses ``videobert run``'s settings (``videobert.prefect_env.local_flow_settings``:
flow-run heartbeats off on a temporary server); ``--heartbeats-on-too`` adds a run with
Prefect's default heartbeats (what a deployment run pays).

**Task runs vs corpus.** Synthetic corpora of N and 10N videos (2 clips each) are ingested and
tokenized (the flows whose work grows with the corpus) into fresh homes; task runs are read
back from Prefect's API per flow run, beside the batches our flows formed (counted in
``flows.runners.batches``: ingest hash/probe batches, tokenize feature chunks) and the clips.

    python bench/orchestration.py --heartbeats-on-too    # nightly x2, N = 5 / 50 videos
    python bench/orchestration.py --quick                # 20/10 training steps, N = 3 / 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OURS = tuple(str(ROOT / d) + os.sep for d in ("flows", "tasks", "models", "warehouse",
                                               "videobert"))
PREFECT_STACK = tuple(f"{os.sep}site-packages{os.sep}{p}{os.sep}" for p in (
    "prefect", "prefect_dask", "httpx", "httpcore", "h11", "anyio", "sniffio", "uvicorn",
    "starlette", "fastapi", "sqlalchemy", "aiosqlite", "alembic", "websockets", "asgi_lifespan"))
STAGES = ["(outside flows)"]  # the innermost flow being called (see _track_stages)


def _kind(code: Any, cache: dict[Any, str]) -> str:
    """'ours', 'prefect', 'wait' (a Prefect future's wait) or '' (neutral) for a code object."""
    if code not in cache:
        f = code.co_filename
        cache[code] = ("ours" if f.startswith(OURS) else
                       "wait" if f.endswith(f"{os.sep}prefect{os.sep}futures.py") else
                       "prefect" if any(s in f for s in PREFECT_STACK) else "")
    return cache[code]


def _classify(frame: Any, cache: dict[Any, str]) -> tuple[str, str]:
    """Side of a stack, and 'outermost Prefect-stack frame under ours -> innermost prefect'."""
    seen, entry, inner = set(), "", ""
    while frame is not None:
        k = _kind(frame.f_code, cache)
        if k == "ours":
            break
        if k:
            seen.add(k)
            entry = f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name})"
            if not inner and f"{os.sep}prefect{os.sep}" in frame.f_code.co_filename:
                inner = entry
        frame = frame.f_back
    label = f"{entry} -> {inner}" if entry else ""
    if frame is None:  # no frame of ours at all
        return ("prefect" if seen else "none"), label
    return ("wait" if "wait" in seen else "prefect" if seen else "ours"), label


class Sampler(threading.Thread):
    """Wall-clock attribution of the main thread to our code or Prefect, per stage."""

    def __init__(self, interval_s: float = 0.02) -> None:
        super().__init__(daemon=True, name="orchestration-sampler")
        self.interval_s, self.main = interval_s, threading.main_thread().ident
        self.wall: dict[str, Counter] = defaultdict(Counter)  # stage -> side -> seconds
        self.entries: Counter = Counter()  # Prefect seconds by "stage: call"
        self._halt, self._cache = threading.Event(), {}  # type: ignore[var-annotated]

    def run(self) -> None:
        last = time.perf_counter()
        while not self._halt.wait(self.interval_s):
            now = time.perf_counter()
            dt, last = now - last, now
            frames = sys._current_frames()
            side, entry = _classify(frames.get(self.main), self._cache)
            if side == "wait":
                others = [_classify(f, self._cache) for t, f in frames.items()
                          if t not in (self.main, threading.get_ident())]
                side = "ours" if any(s == "ours" for s, _ in others) else "prefect"
                entry = next((e for s, e in others if s == "prefect" and "task_engine" in e),
                             "future wait, no task running")
            self.wall[STAGES[-1]][side] += dt
            if side == "prefect":
                self.entries[f"{STAGES[-1]}: {entry}"] += dt

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _track_stages() -> None:
    """Wrap ``Flow.__call__`` so that ``STAGES[-1]`` is the innermost flow being called."""
    from prefect.flows import Flow

    real = Flow.__call__

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        STAGES.append(self.name)
        try:
            return real(self, *args, **kwargs)
        finally:
            STAGES.pop()

    Flow.__call__ = call  # type: ignore[method-assign]


def _flow_runs() -> dict[str, str]:
    """Every flow run id -> flow name, on this process's Prefect API."""
    from prefect import get_client

    with get_client(sync_client=True) as c:
        names = {f.id: f.name for f in c.read_flows(limit=200)}
        return {str(r.id): names.get(r.flow_id, "?") for r in c.read_flow_runs(limit=200)}


def _task_runs(flow_runs: dict[str, str], settle_s: float = 3.0) -> dict[str, Counter]:
    """Task runs per flow name (by task name) of the given flow runs. Task runs are recorded
    from events, asynchronously: read until the count holds still for ``settle_s``."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    flt = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=list(flow_runs)))
    prev, stable_since = -1, time.monotonic()
    while prev < 0 or time.monotonic() - stable_since < settle_s:
        time.sleep(0.5)
        with get_client(sync_client=True) as c:
            runs, off = [], 0
            while batch := c.read_task_runs(task_run_filter=flt, limit=200, offset=off):
                runs, off = runs + batch, off + len(batch)
        if len(runs) != prev:
            prev, stable_since = len(runs), time.monotonic()
    return {f: Counter(r.name.rsplit("-", 1)[0] for r in runs
                       if flow_runs[str(r.flow_run_id)] == f) for f in set(flow_runs.values())}


def _server_cpu_s() -> float:
    """CPU seconds used so far by the Prefect server process this process started."""
    import psutil
    procs = [p for p in psutil.Process().children() if "server" in " ".join(p.cmdline())]
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def nightly(work: Path, name: str, quick: bool, weights: Path, sampler: Sampler,
            heartbeats: bool = False) -> dict[str, Any]:
    """One sampled nightly run on the sample corpus in a fresh home (module docstring)."""
    import psutil
    from prefect.settings import temporary_settings

    from flows.nightly import NightlyParams, nightly_flow
    from videobert.prefect_env import local_flow_settings

    shutil.copytree(weights, (home := work / name) / "weights")
    before = set(_flow_runs())
    steps = {"pretrain_steps": 20, "finetune_steps": 10} if quick else {}
    cpu0, scpu0 = psutil.Process().cpu_times(), _server_cpu_s()
    with temporary_settings({}) if heartbeats else local_flow_settings():
        sampler.start()
        t0 = time.perf_counter()
        result = nightly_flow(NightlyParams(home=str(home), **steps))
        wall = time.perf_counter() - t0
        sampler.stop()
    cpu = sum(psutil.Process().cpu_times()[:2]) - sum(cpu0[:2])
    runs = {k: v for k, v in _flow_runs().items() if k not in before}
    tot = sum(sampler.wall.values(), Counter())
    return {"heartbeats": heartbeats, "status": result["status"], "wall_s": round(wall, 2),
            "sampled_s": round(tot.total(), 2), "prefect_s": round(tot["prefect"], 2),
            "share": round(tot["prefect"] / tot.total(), 4),
            "stages": {k: {"wall_s": round(c.total(), 2), "ours_s": round(c["ours"], 2),
                           "prefect_s": round(c["prefect"], 2)} for k, c in sampler.wall.items()},
            "process_cpu_s": round(cpu, 1), "server_cpu_s": round(_server_cpu_s() - scpu0, 1),
            "top_prefect": [(k, round(v, 2)) for k, v in sampler.entries.most_common(10)],
            "flow_runs": len(runs), "task_runs": {k: dict(v) for k, v in _task_runs(runs).items()}}


def growth(work: Path, n: int, factor: int, weights: Path) -> list[dict[str, Any]]:
    """Ingest + tokenize synthetic corpora of ``n`` and ``factor * n`` videos; task runs."""
    import flows.ingest as fi
    import flows.visual_tokens as vt
    from flows.ingest import IngestParams, ingest_flow
    from flows.visual_tokens import TokenizeParams, tokenize_flow
    from tasks.ingest.synthetic import generate_synthetic

    formed, real = Counter(), fi.batches
    per_task = TokenizeParams.model_fields["clips_per_task"].default

    def counting(stage: str) -> Any:
        def batches(items: list, size: int) -> list[list]:
            out = real(items, size)
            if stage == "ingest" or size == per_task:  # not the concepts chunks (no task)
                formed[stage] += len(out)
            return out
        return batches

    fi.batches, vt.batches = counting("ingest"), counting("tokenize")
    rows = []
    try:
        for size in (n, n * factor):
            corpus = generate_synthetic(work / f"synthetic-{size}", size, seed=0)
            shutil.copytree(weights, (home := work / f"growth-{size}") / "weights")
            formed.clear()
            before = set(_flow_runs())
            t0 = time.perf_counter()
            ingest = ingest_flow(IngestParams(source=str(corpus.root), home=str(home)))
            tokenize_flow(TokenizeParams(home=str(home), levels=2, branching=4,
                                         min_points_per_token=2))
            wall = time.perf_counter() - t0
            runs = _task_runs({k: v for k, v in _flow_runs().items() if k not in before})
            rows.append({"videos": size, "clips": ingest["clips"], "wall_s": round(wall, 1),
                         "batches": dict(formed), "batches_total": formed.total(),
                         "task_runs": {k: dict(v) for k, v in runs.items()},
                         "task_runs_total": sum(c.total() for c in runs.values())})
    finally:
        fi.batches = vt.batches = real
    return rows


def _print_nightly(o: dict[str, Any]) -> None:
    print(f"nightly, heartbeats {'on' if o['heartbeats'] else 'OFF'}: {o['status']}, "
          f"{o['flow_runs']} flow runs, flow wall {o['wall_s']} s; CPU s: this process "
          f"{o['process_cpu_s']}, Prefect server {o['server_cpu_s']}")
    print("| stage | wall s | ours s | Prefect s | Prefect share |\n|---|---|---|---|---|")
    for name, s in sorted(o["stages"].items(), key=lambda kv: -kv[1]["wall_s"]):
        print(f"| {name} | {s['wall_s']} | {s['ours_s']} | {s['prefect_s']} | "
              f"{100 * s['prefect_s'] / max(s['wall_s'], 1e-9):.1f}% |")
    print(f"| **total** | {o['sampled_s']} | {o['sampled_s'] - o['prefect_s']:.2f} | "
          f"{o['prefect_s']} | **{100 * o['share']:.1f}%** |")
    print("Prefect time by call (stage: our call into Prefect -> innermost Prefect frame):\n"
          + "\n".join(f"  {v:7.2f} s  {k}" for k, v in o["top_prefect"]))
    print("task runs:", json.dumps(o["task_runs"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer training steps, N=3")
    ap.add_argument("--n", type=int, default=None, help="videos at size N (default 5)")
    ap.add_argument("--heartbeats-on-too", action="store_true",
                    help="also a nightly run with Prefect's default flow-run heartbeats")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vb-bench-orch-"))
    os.environ.update(PREFECT_HOME=str(work / "prefect"), DO_NOT_TRACK="1",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING",
                      PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    os.environ.pop("PREFECT_API_URL", None)
    (work / "prefect").mkdir(parents=True, exist_ok=True)
    from prefect import get_client

    from models.i3d_weights import install_i3d_weights
    install_i3d_weights(weights := work / "weights")  # once; each fresh home gets a copy
    t0 = time.perf_counter()
    with get_client(sync_client=True) as c:  # starts the temporary server (fresh database)
        c.hello()
    res: dict[str, Any] = {"server_start_s": time.perf_counter() - t0, "machine": (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")}
    print(f"machine: {res['machine']}; Prefect server start (fresh database, not in the figures "
          f"below): {res['server_start_s']:.1f} s")
    _track_stages()
    res["overhead"] = [nightly(work, "nightly-home", args.quick, weights, Sampler())]
    if args.heartbeats_on_too:
        res["overhead"].append(nightly(work, "nightly-home-hb", args.quick, weights,
                                       Sampler(), heartbeats=True))
    for o in res["overhead"]:
        _print_nightly(o)
    res["growth"] = g = growth(work, args.n or (3 if args.quick else 5), 10, weights)
    print("| videos | clips | batches | task runs | wall s |\n|---|---|---|---|---|")
    for r in g:
        print(f"| {r['videos']} | {r['clips']} | {r['batches_total']} {r['batches']} | "
              f"{r['task_runs_total']} {r['task_runs']} | {r['wall_s']} |")
    res["clips_growth"] = round(g[1]["clips"] / g[0]["clips"], 2)
    res["task_runs_growth"] = round(g[1]["task_runs_total"] / g[0]["task_runs_total"], 2)
    print(f"clips x{res['clips_growth']}, task runs x{res['task_runs_growth']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
