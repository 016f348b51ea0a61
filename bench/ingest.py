"""Ingest throughput vs the bare ffprobe/ffmpeg commands doing the same probing and validation.

Both sides run on the same files in the same process, alternating, with the same number of
parallel workers:

- **videobert**: the ``ingest`` Prefect flow end to end into a fresh data home (scan, sha256,
  sniff, probe, validation pass, clips, subtitles, Parquet commits, catalog publishing), with
  Prefect's server already running (as under a deployment; the one-off server start of a
  cold CLI call is reported separately).
- **bare**: the exact ffprobe/ffmpeg argument lists the ingest ran (recorded from the ingest
  itself), replayed with ``subprocess.run`` on a thread pool.

Throughput is hours of video per hour of wall time; the ratio videobert / bare is what the
pipeline keeps of the tools' own speed (target >= 0.9). Usage::

    python bench/ingest.py                 # sample corpus + 300 synthetic videos
    python bench/ingest.py --synthetic 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


VALIDATION = "decode"


def _record_commands(source: Path, work: Path, workers: int) -> tuple[list[list[str]], float]:
    """Run the ingest once with run_tool wrapped; return its commands and video hours."""
    import tasks.shared.media as media
    import tasks.shared.media_validate as mv
    from flows.ingest import IngestParams, ingest_flow
    from videobert.prefect_env import local_flow_settings
    from warehouse.store import Warehouse

    recorded: list[list[str]] = []
    real = mv.run_tool

    def recording(args, **kw):
        recorded.append(list(args))
        return real(args, **kw)

    mv.run_tool = media.run_tool = recording
    try:
        home = work / "record-home"
        with local_flow_settings():
            ingest_flow(IngestParams(source=str(source), home=str(home), workers=workers,
                                     validation=VALIDATION))
    finally:
        mv.run_tool = media.run_tool = real
    con = Warehouse(home).connect()
    hours = con.sql("SELECT sum(duration_s) / 3600 FROM videos").fetchall()[0][0] or 0.0
    shutil.rmtree(home)
    return recorded, hours


def _bare(commands: list[list[str]], workers: int) -> float:
    def one(args: list[str]) -> None:
        subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, commands))
    return time.perf_counter() - t0


def _ours(source: Path, work: Path, workers: int, i: int) -> float:
    from flows.ingest import IngestParams, ingest_flow
    from videobert.prefect_env import local_flow_settings

    home = work / f"home-{i}"
    t0 = time.perf_counter()
    with local_flow_settings():
        ingest_flow(IngestParams(source=str(source), home=str(home), workers=workers,
                                 validation=VALIDATION))
    dt = time.perf_counter() - t0
    shutil.rmtree(home)
    return dt


def _cold_cli(source: Path, work: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    home = work / "cold-home"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "videobert.cli", "ingest", str(source), "--home",
                    str(home), "--validate", VALIDATION], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    shutil.rmtree(home)
    return dt


def bench_corpus(name: str, source: Path, work: Path, workers: int, repeats: int) -> dict:
    """Median timings of both sides on one corpus."""
    commands, hours = _record_commands(source, work, workers)
    ours, bare = [], []
    for i in range(repeats):
        if i % 2 == 0:
            ours.append(_ours(source, work, workers, i))
            bare.append(_bare(commands, workers))
        else:
            bare.append(_bare(commands, workers))
            ours.append(_ours(source, work, workers, i))
    t_ours, t_bare = statistics.median(ours), statistics.median(bare)
    return {"corpus": name, "files": sum(1 for p in source.rglob("*") if p.is_file()),
            "video_hours": round(hours, 4), "commands": len(commands),
            "videobert_s": round(t_ours, 3), "bare_s": round(t_bare, 3),
            "videobert_h_per_h": round(hours * 3600 / t_ours, 1),
            "bare_h_per_h": round(hours * 3600 / t_bare, 1),
            "ratio": round(t_bare / t_ours, 3), "runs": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=300, help="synthetic videos (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    ap.add_argument("--validation", choices=["decode", "demux"], default="decode")
    ap.add_argument("--clips-per-video", type=int, default=2,
                    help="synthetic video length in 1.5 s clips (2: 3 s videos)")
    args = ap.parse_args()
    global VALIDATION
    VALIDATION = args.validation

    from tasks.ingest.samples import build_sample_corpus
    from tasks.ingest.synthetic import generate_synthetic

    work = args.work or Path(tempfile.mkdtemp(prefix="vb-bench-ingest-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    corpora = [("sample (real)", build_sample_corpus(work / "samples").root)]
    if args.synthetic:
        syn = generate_synthetic(work / "synthetic", args.synthetic, seed=0,
                                 clips_per_video=args.clips_per_video)
        corpora.append((f"synthetic x{args.synthetic} ({args.clips_per_video * 1.5:g} s each)",
                        syn.root))
    cold = _cold_cli(corpora[0][1], work)
    results = [bench_corpus(n, src, work, args.workers, args.repeats) for n, src in corpora]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"Python {platform.python_version()}"
    print(f"machine: {machine}; workers {args.workers}; validation {VALIDATION}; "
          f"median of {args.repeats} runs")
    print("| corpus | files | video h | videobert s | bare ffprobe/ffmpeg s | "
          "videobert h/h | bare h/h | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['corpus']} | {r['files']} | {r['video_hours']} | {r['videobert_s']} | "
              f"{r['bare_s']} | {r['videobert_h_per_h']} | {r['bare_h_per_h']} | "
              f"{r['ratio']} |")
    print(f"cold CLI `videobert ingest` on the sample corpus (fresh home, Prefect server "
          f"start included): {cold:.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results,
                                         "cold_cli_s": cold}, indent=1))


if __name__ == "__main__":
    main()
