"""Speech to text at ingest vs bare faster-whisper on the same audio, same process, alternating.

Corpus: ``--videos`` talking videos, each the real-speech clip of ``tests/data/jfk.opus``
looped ``--loops`` times after a different lead-in (so every video is distinct content).

- **videobert**: the ``ingest`` flow end to end into a fresh data home with ``asr="always"``,
  minus the same ingest with ``asr="never"`` (run alternately): the wall time the ASR part adds
  to an ingest, audio extraction through the safe ffmpeg runner, transcript cache, row
  building and Parquet commits included. Prefect's server and the Whisper model stay loaded in
  this process across runs, as in a long-running worker.
- **bare**: ``WhisperModel.transcribe`` on the same 16 kHz audio (decoded beforehand, not
  timed), one video after another, same model, device and decoding options.

Real-time factor (RTF) = seconds of compute per second of audio. ratio = RTF_bare /
RTF_videobert = bare_s / (with_asr_s - without_asr_s): the share of faster-whisper's own speed
that the pipeline keeps (target >= 0.9). Each repeat runs the three sides back to back (order
alternating); the ratio reported is the median of the per-repeat ratios (a paired estimate
that a busy machine's drift between repeats does not bias), with the ratio of the medians and
the per-repeat spread beside it. Usage::

    python bench/asr.py                     # 6 videos x 4 loops (~4.5 min of speech), CPU
    python bench/asr.py --device cuda       # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def make_corpus(folder: Path, videos: int, loops: int) -> float:
    """Write the talking videos; returns their total audio seconds."""
    from tests import media_factory as mf

    folder.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for i in range(videos):
        seconds = mf.JFK_SECONDS * loops + 0.25 * i
        mf.ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x48:r=10", "-stream_loop",
                  str(loops - 1), "-i", str(mf.JFK_OPUS), "-filter:a",
                  f"adelay={250 * i}:all=1", "-t", f"{seconds:.2f}", "-c:v", "libx264",
                  "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                  str(folder / f"talk{i:02d}.mp4"))
        total += seconds
    return total


def _ingest(source: Path, work: Path, mode: str, model: str, device: str, i: int) -> float:
    from flows.ingest import IngestParams, ingest_flow

    home = work / f"home-{mode}-{i}"
    t0 = time.perf_counter()
    summary = ingest_flow(IngestParams(source=str(source), home=str(home), asr=mode,
                                       asr_model=model, asr_device=device))
    dt = time.perf_counter() - t0
    if mode == "always":
        assert summary["asr"]["transcribed"] == summary["n_ingested"], summary["asr"]
    shutil.rmtree(home)
    return dt


def _audio(source: Path) -> list:
    """Each video's audio as the pipeline decodes it (16 kHz mono float32)."""
    from tasks.ingest.asr import extract_audio
    from tasks.shared import media

    out = []
    for p in sorted(source.glob("*.mp4")):
        pr = media.probe(p)
        out.append(extract_audio(p, pr.duration_s or 0.0, pr.audio_codec, media.Limits())[0])
    return out


def _bare(cfg, audios: list) -> float:
    from tasks.ingest.asr import load_model

    model = load_model(cfg)  # the same cached instance the pipeline uses
    t0 = time.perf_counter()
    for audio in audios:
        segments, _ = model.transcribe(
            audio, language=None if model.model.is_multilingual else "en",
            beam_size=cfg.beam_size, vad_filter=True, word_timestamps=True,
            condition_on_previous_text=False)
        list(segments)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--loops", type=int, default=4, help="speech clip repeats per video")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--work", type=Path, default=None, help="scratch folder")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args()

    from tasks.ingest import asr

    work = args.work or Path(tempfile.mkdtemp(prefix="vb-bench-asr-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect")
    source = work / "videos"
    audio_s = make_corpus(source, args.videos, args.loops)
    cfg, _ = asr.setup("always", args.model, work / "setup-home", args.device)
    assert cfg is not None
    audios = _audio(source)
    _ingest(source, work, "never", args.model, args.device, -1)  # warm up Prefect and ffmpeg
    _bare(cfg, audios[:1])  # loads the model once, as a long-running worker has it
    on, off, bare = [], [], []
    for i in range(args.repeats):
        runs = [("on", "always"), ("off", "never"), ("bare", None)]
        for name, mode in (runs if i % 2 == 0 else runs[::-1]):
            if name == "bare":
                bare.append(_bare(cfg, audios))
            else:
                (on if name == "on" else off).append(
                    _ingest(source, work, mode, args.model, args.device, i))
    t_on, t_off, t_bare = (statistics.median(x) for x in (on, off, bare))
    t_asr = t_on - t_off
    paired = sorted(round(b / (n - f), 3) for n, f, b in zip(on, off, bare, strict=True))
    res = {"videos": args.videos, "audio_s": round(audio_s, 1), "model": cfg.model.model_id,
           "device": f"{cfg.device}/{cfg.compute_type}", "ingest_asr_s": round(t_on, 2),
           "ingest_no_asr_s": round(t_off, 2), "pipeline_asr_s": round(t_asr, 2),
           "bare_s": round(t_bare, 2), "rtf_pipeline": round(t_asr / audio_s, 4),
           "rtf_bare": round(t_bare / audio_s, 4), "ratio": statistics.median(paired),
           "ratio_of_medians": round(t_bare / t_asr, 3), "paired_ratios": paired,
           "runs": args.repeats, "raw": {"on": on, "off": off, "bare": bare}}
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"Python {platform.python_version()}, load avg {os.getloadavg()[0]:.1f}")
    print(f"machine: {machine}; medians of {args.repeats} runs")
    print("| model | device | videos | audio s | ingest+ASR s | ingest s | ASR part s | bare s | "
          "RTF pipeline | RTF bare | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {res['model']} | {res['device']} | {res['videos']} | {res['audio_s']} | "
          f"{res['ingest_asr_s']} | {res['ingest_no_asr_s']} | {res['pipeline_asr_s']} | "
          f"{res['bare_s']} | {res['rtf_pipeline']} | {res['rtf_bare']} | {res['ratio']} |")
    print(f"per-repeat ratios {paired}; ratio of the medians {res['ratio_of_medians']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "result": res}, indent=1))


if __name__ == "__main__":
    main()
