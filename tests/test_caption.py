"""Captioning (issue 15): the decoder on VideoBERT, its decoding, training, scores and outputs.

In-process tests use a small clip set built in memory (visual token -> object, clip feature ->
motion) so a tiny captioner can learn it in seconds on CPU; the command-line tests run on a copy
of the session's sample-corpus home (``sample_run``): ``caption train``, ``caption --all``
killed mid-run and rerun, ``caption VIDEO --format srt`` muxed by ffmpeg.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.caption_decoding import Decoding, generate, hf_generate
from models.captioner import CaptionerConfig, VideoCaptioner
from models.videobert import build_model, text_tokenizer
from models.vocab import CLS
from tasks.caption.data import ClipSet
from tasks.caption.describe import cues, describe, to_srt, to_vtt
from tasks.caption.scores import caption_scores, slot_accuracy
from tasks.caption.train import CaptionTrainConfig, infill, train_captioner

OBJECTS = ["cat", "horse", "coin", "rocket"]
MOTIONS = ["spins", "grows", "falls down"]


def _clipset(n: int, seed: int, dim: int = 8) -> ClipSet:
    """Clips whose visual token names the object and whose feature names the motion."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(len(MOTIONS), dim))
    ids, windows, feats, refs = [], [], [], []
    for i in range(n):
        o, m = int(rng.integers(len(OBJECTS))), int(rng.integers(len(MOTIONS)))
        f = centres[m] + 0.1 * rng.normal(size=dim)
        ids.append(f"c{seed}-{i}")
        windows.append([o])
        feats.append([(f / np.linalg.norm(f)).astype(np.float32)])
        refs.append([f"the {OBJECTS[o]} {MOTIONS[m]}"])
    return ClipSet(clip_ids=ids, video_ids=["v"] * n, starts=[1.5 * i for i in range(n)],
                   ends=[1.5 * i + 1.5 for i in range(n)], splits=["train"] * n,
                   windows=windows, feats=feats, refs=refs)


def _captioner(seed: int = 0, dim: int = 8) -> VideoCaptioner:
    torch.manual_seed(seed)
    vb = build_model("tiny", len(OBJECTS), feature_dim=dim)
    return VideoCaptioner.from_videobert(vb, CaptionerConfig(feature_encoder="test",
                                                             feature_memory=True),
                                         feature_dim=dim, seed=seed)


@pytest.fixture(scope="module")
def tok():
    return text_tokenizer()


# ----------------------------------------------------------------------------- model
def test_decoder_starts_from_the_text_tower():
    """The first decoder position sees only ``[CLS]`` (causal), so with cross-attention shut
    it computes what VideoBERT computes for the one-token text ``[CLS]``: the copy of
    embeddings, positions (+ token type), LayerNorms, self-attention and FFN is exact."""
    cap = _captioner().eval()
    for layer in cap.decoder.model.decoder.layers:
        torch.nn.init.zeros_(layer.encoder_attn.out_proj.weight)
        torch.nn.init.zeros_(layer.encoder_attn.out_proj.bias)
    ids = torch.tensor([[CLS]])
    with torch.no_grad():
        ref = cap.encoder.encode(ids, torch.zeros_like(ids), torch.ones_like(ids, dtype=bool))
        memory = torch.randn(1, 3, cap.encoder.config.hidden)
        out = cap.decoder.model.decoder(input_ids=ids, encoder_hidden_states=memory,
                                        encoder_attention_mask=torch.ones(1, 3, dtype=bool))
    # LayerNorm eps differs (BART 1e-5, BERT 1e-12): equal to ~1e-4
    torch.testing.assert_close(out.last_hidden_state, ref, atol=2e-3, rtol=1e-3)
    # and the output layer is the (tied) word embedding table
    assert cap.decoder.lm_head.weight.data_ptr() == \
        cap.decoder.model.decoder.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(cap.decoder.lm_head.weight,
                               cap.encoder.embeddings.word.weight[:30522])


def test_batched_decoding_matches_transformers_generate():
    """Same weights, same settings: our batched greedy and beam search give the tokens of
    transformers' ``generate`` for every clip of the batch (hypotheses ending at different
    steps, n-gram bans, length penalties, a padded encoder position)."""
    cap = _captioner(1).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # peaky logits, cross-attention that matters, [SEP] within reach
        cap.decoder.model.decoder.embed_tokens.weight.mul_(10)
        cap.decoder.model.decoder.embed_tokens.weight[102].mul_(3)
        for layer in cap.decoder.model.decoder.layers:
            layer.encoder_attn.out_proj.weight.normal_(0, 0.5)
    memory = torch.randn(6, 4, cap.encoder.config.hidden)
    mask = torch.ones(6, 4, dtype=torch.bool)
    mask[0, 3] = False
    lengths, distinct = set(), set()
    for dec in (Decoding(beams=1, max_len=12, no_repeat_ngram=0),
                Decoding(beams=1, max_len=12, no_repeat_ngram=2),
                Decoding(beams=4, max_len=12, no_repeat_ngram=3),
                Decoding(beams=3, max_len=10, no_repeat_ngram=0, length_penalty=0.6)):
        ours, scores = generate(cap.decoder, memory, mask, dec)
        assert ours == hf_generate(cap.decoder, memory, mask, dec), dec
        assert len(scores) == 6 and all(np.isfinite(scores))
        lengths |= {len(t) for t in ours}
        distinct.add(len({tuple(t) for t in ours}))
    assert len(lengths) > 2 and max(distinct) > 2  # a test that could tell them apart


def test_infill_masks_spans_as_bart():
    rng = np.random.default_rng(0)
    ids = list(range(1000, 1040))
    out = infill(ids, rng)
    kept = [t for t in out if t != 103]
    assert 103 in out and len(out) < len(ids)
    assert len(ids) - len(kept) == round(0.3 * len(ids))  # 30 % of the words masked
    assert kept == [t for t in ids if t in set(kept)]  # order kept, nothing invented


# ----------------------------------------------------------------------------- scores
def test_scores_use_coco_scorers_and_slots():
    refs = {"a": ["the cat spins on the grass"], "b": ["a horse falls down on the moon"],
            "c": ["the coin grows in the night sky"]}
    same = caption_scores({k: v[0] for k, v in refs.items()}, refs, meteor=False)
    assert same["bleu4"] == pytest.approx(100.0, abs=0.01) and same["rouge_l"] == 100.0
    swapped = caption_scores({"a": refs["b"][0], "b": refs["c"][0], "c": refs["a"][0]}, refs,
                             meteor=False)
    assert swapped["cider"] < same["cider"] and swapped["bleu4"] < 50
    slots = {"object": {"cat": ("cat",), "horse": ("horse",), "coin": ("coin",)},
             "motion": {"spins": ("spins", "spins around"), "falls": ("falls down",)}}
    acc = slot_accuracy(["a cat spins", "a coin falls down", "the coin"],
                        [refs["a"], refs["b"], refs["c"]], slots)
    assert acc["object_acc"] == pytest.approx(200 / 3)  # cat yes, horse no, coin yes
    assert acc["motion_acc"] == 100.0  # clip c's reference names no known motion
    assert acc["all_acc"] == pytest.approx(200 / 3)


def test_subtitle_cues_merge_and_format():
    c = cues([0.0, 1.5, 3.0, 4.5], [1.5, 3.0, 4.5, 6.0], ["a cat", "a cat", "", "a dog"])
    assert c == [(0.0, 3.0, "a cat"), (4.5, 6.0, "a dog")]
    assert to_srt(c).startswith("1\n00:00:00,000 --> 00:00:03,000\na cat\n\n2\n")
    assert to_vtt(c).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:03.000\na cat\n")


# ----------------------------------------------------------------------------- training
def test_tiny_captioner_learns_object_and_motion(tmp_path, tok):
    """Trained briefly on CPU, the tiny captioner names a held-out clip's object (from its
    visual token) and motion (from its feature); an untrained one does not."""
    train, val = _clipset(96, 0), _clipset(24, 1)
    cap = _captioner()
    dec = Decoding(beams=2, max_len=8)
    before = [t for t, _ in describe(cap, tok, val, dec, progress=False)]
    cfg = CaptionTrainConfig(steps=160, batch_size=16, lr=1e-2, warmup=20, eval_every=40,
                             ckpt_every=80, patience=10, encoder_lr_scale=1.0,
                             label_smoothing=0.0, device="cpu")
    res = train_captioner(cap, tok, train, val, cfg, tmp_path / "run", progress=False)
    after = [t for t, _ in describe(cap, tok, val, dec, progress=False)]
    slots = {"object": {o: (o,) for o in OBJECTS}, "motion": {m: (m,) for m in MOTIONS}}
    acc0 = slot_accuracy(before, val.refs, slots)
    acc1 = slot_accuracy(after, val.refs, slots)
    assert acc1.get("all_acc", 0) >= 80, (after[:4], res["history"])
    assert acc0.get("all_acc", 0) < 40
    assert res["best"]["cider"] > 1.0 and (tmp_path / "run" / "best" / "captioner.json").is_file()


def test_caption_training_resumes_exactly(tmp_path, tok):
    """Killed after 20 steps and resumed from its checkpoint, a run ends with the weights of an
    uninterrupted run (optimiser, schedule, RNG and data position all restored)."""
    train, val = _clipset(40, 0), _clipset(8, 1)
    cfg = CaptionTrainConfig(steps=40, batch_size=8, lr=2e-3, warmup=5, eval_every=20,
                             ckpt_every=20, patience=10, denoise_steps=10, device="cpu")
    straight = _captioner(2)
    train_captioner(straight, tok, train, val, cfg, tmp_path / "a", progress=False)
    last_a = torch.load(tmp_path / "a" / "checkpoints" / "step-0000040" / "trainer_state.pt",
                        weights_only=True)
    first = _captioner(2)
    train_captioner(first, tok, train, val, cfg, tmp_path / "b", stop_after=20, progress=False)
    resumed = _captioner(3)  # other init: everything must come from the checkpoint
    train_captioner(resumed, tok, train, val, cfg, tmp_path / "b", resume=True, progress=False)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "checkpoints" / "step-0000040" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "step-0000040" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)
    last_b = torch.load(tmp_path / "b" / "checkpoints" / "step-0000040" / "trainer_state.pt",
                        weights_only=True)
    assert json.loads(last_a["trainer"])["history"] == json.loads(last_b["trainer"])["history"]


def test_captioner_checkpoint_round_trip(tmp_path, tok):
    cap = _captioner(4).eval()
    clips = _clipset(5, 2)
    dec = Decoding(beams=3, max_len=6)
    first = describe(cap, tok, clips, dec, progress=False)
    cap.save_pretrained(tmp_path / "m")
    again = VideoCaptioner.from_pretrained(tmp_path / "m")
    assert describe(again, tok, clips, dec, progress=False) == first
    cap.save_pretrained(tmp_path / "m")  # replacing an existing one leaves no debris
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    (tmp_path / "m" / "captioner.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a captioner"):
        VideoCaptioner.from_pretrained(tmp_path / "m")


# ----------------------------------------------------------------------------- commands
def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"VIDEOBERT_HOME": str(home), "COLUMNS": "200", "DO_NOT_TRACK": "1"}


def _cli(home: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videobert.cli", *args], capture_output=True,
                          text=True, env=_env(home), timeout=timeout, cwd=home.parent)


@pytest.fixture(scope="module")
def captioned_home(sample_run, tmp_path_factory) -> Path:
    """The sample corpus's home with a caption model trained by the command line."""
    home = tmp_path_factory.mktemp("caption") / "home"
    shutil.copytree(sample_run["home"], home, ignore=shutil.ignore_patterns("prefect"))
    p = _cli(home, "caption", "train", "--steps", "12", "--eval-every", "6", "--no-baselines",
             "--beams", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "best val CIDEr-D" in p.stdout
    return home


def _rows(home: Path) -> list[tuple]:
    from warehouse.store import Warehouse

    con = Warehouse(home).connect()
    try:
        return con.execute("SELECT clip_id, model_run, text FROM generated_captions "
                           "ORDER BY clip_id").fetchall()
    finally:
        con.close()


def test_caption_run_is_registered(captioned_home):
    from warehouse.store import Warehouse

    con = Warehouse(captioned_home).connect()
    run = con.execute("SELECT model_run, kind, status, parent_run, checkpoint_path "
                      "FROM model_runs WHERE kind = 'caption'").fetchall()
    steps = con.execute("SELECT DISTINCT step FROM training_metrics WHERE model_run = ? AND "
                        "metric = 'cider' ORDER BY 1", [run[0][0]]).fetchall()
    con.close()
    assert len(run) == 1 and run[0][2] == "done" and run[0][3].startswith("finetune-")
    assert (captioned_home / run[0][4] / "captioner.json").is_file()
    assert [s[0] for s in steps] == [6, 12]


_FILL = """
import sys
from pathlib import Path
from flows.caption import caption_run, load_captioner
from models.caption_decoding import Decoding
from models.videobert import text_tokenizer
from tasks.caption.fill import fill
from tasks.pretrain.checkpoint import hold_forever
from warehouse.store import Warehouse

home = Path(sys.argv[1])
wh = Warehouse(home)
run = caption_run(wh, None)
model, clips = load_captioner(home, run)
hold = hold_forever(home / "held")
fill(wh, model, text_tokenizer(), clips, run[0], Decoding(beams=4), chunk=4, batch=4,
     progress=False, after_chunk=lambda n: hold(home) if n == 2 else None)
"""


def test_fill_survives_sigkill_and_rerun_converges(captioned_home, tmp_path):
    """``generated_captions`` is written chunk by chunk: killed after two chunks, the rows
    written stay; ``videobert caption --all`` then captions exactly the rest, and the result
    equals an uninterrupted fill (one row per clip)."""
    home = tmp_path / "home"
    shutil.copytree(captioned_home, home)
    script = tmp_path / "fill.py"
    script.write_text(_FILL)
    proc = subprocess.Popen([sys.executable, str(script), str(home)], env=_env(home),
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 300
    while not (home / "held").exists():
        assert proc.poll() is None and time.time() < deadline, "the fill never got there"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _rows(home)
    assert len(partial) == 8  # two chunks of four, committed
    p = _cli(home, "caption", "--all", "--chunk", "4")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "8 already there" in p.stdout
    full = _rows(home)
    n_clips = _clip_count(home)
    assert len(full) == n_clips and len({r[0] for r in full}) == n_clips
    assert set(partial) <= set(full)
    # an uninterrupted fill gives the same captions
    p = _cli(captioned_home, "caption", "--all", "--chunk", "4")
    assert p.returncode == 0, p.stderr[-3000:]
    assert _rows(captioned_home) == full
    again = _cli(home, "caption", "--all")
    assert again.returncode == 0 and f"0 written, {n_clips} already there" in again.stdout


def _clip_count(home: Path) -> int:
    from warehouse.store import Warehouse

    con = Warehouse(home).connect()
    try:
        return con.execute("SELECT count(*) FROM clips").fetchone()[0]
    finally:
        con.close()


def test_caption_video_writes_an_srt_ffmpeg_can_mux(captioned_home, tmp_path):
    from tasks.shared.ffbin import find_tools

    srt = tmp_path / "bikes.srt"
    p = _cli(captioned_home, "caption", "bikes.mkv", "--format", "srt", "--out", str(srt))
    assert p.returncode == 0, p.stderr[-3000:]
    text = srt.read_text()
    blocks = [b for b in text.strip().split("\n\n") if b]
    assert blocks and all(b.split("\n")[0].isdigit() and " --> " in b.split("\n")[1]
                          for b in blocks)
    video = next((captioned_home / "samples").rglob("bikes.mkv"))
    tools = find_tools()
    ffmpeg, ffprobe = tools.ffmpeg, tools.ffprobe
    muxed = tmp_path / "bikes-captioned.mkv"
    r = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(video), "-i", str(srt), "-map",
                        "0:v", "-map", "1", "-c:v", "copy", "-c:s", "srt", str(muxed)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    probe = subprocess.run([ffprobe, "-v", "error", "-show_entries", "stream=codec_type",
                            "-of", "json", str(muxed)], capture_output=True, text=True)
    kinds = [s["codec_type"] for s in json.loads(probe.stdout)["streams"]]
    assert kinds.count("subtitle") == 1
    # by video id prefix, as JSON and WebVTT too
    vid = _video_id(captioned_home, "bikes.mkv")
    j = _cli(captioned_home, "caption", vid[:10], "--format", "json")
    assert j.returncode == 0, j.stderr[-2000:]
    rows = json.loads(j.stdout)
    assert rows and all(r["text"] for r in rows) and rows[0]["start_s"] == 0.0
    v = _cli(captioned_home, "caption", vid, "--format", "vtt")
    assert v.stdout.startswith("WEBVTT\n")
    bad = _cli(captioned_home, "caption", "no-such-video.mp4")
    assert bad.returncode == 2 and "no ingested video matches" in bad.stderr
    assert "Traceback" not in bad.stderr


def _video_id(home: Path, name: str) -> str:
    from warehouse.store import Warehouse

    con = Warehouse(home).connect()
    try:
        return con.execute("SELECT video_id FROM video_files WHERE path LIKE ?",
                           [f"%{name}"]).fetchone()[0]
    finally:
        con.close()


def test_generated_captions_are_searchable_by_words(captioned_home, tmp_path):
    """A clip is found by the words of its generated caption (words nothing says there), and
    search shows the caption; the newest caption model's captions are the ones indexed."""
    from warehouse.store import Warehouse, utcnow

    home = tmp_path / "home"
    shutil.copytree(captioned_home, home)
    wh = Warehouse(home)
    con = wh.connect()
    clip, video, start, end = con.execute(
        "SELECT clip_id, video_id, start_s, end_s FROM clips ORDER BY clip_id LIMIT 1").fetchone()
    said = " ".join(r[0] for r in con.execute(
        "SELECT text FROM text_segments WHERE video_id = ?", [video]).fetchall())
    con.close()
    row = {"clip_id": clip, "video_id": video, "model_run": "caption-newer", "start_s": start,
           "end_s": end, "text": "a purple elephant juggles oranges", "score": -1.0,
           "decoding_json": "{}", "created_at": utcnow()}
    with wh.writer(purpose="test") as w:
        w.commit([w.stage("generated_captions", [row])])
    p = _cli(home, "index")
    assert p.returncode == 0, p.stderr[-3000:]
    p = _cli(home, "search", "juggling elephants", "--mode", "lexical", "--format", "json")
    assert p.returncode == 0, p.stderr[-3000:]
    hits = json.loads(p.stdout)
    assert "elephant" not in said.lower()
    assert hits[0]["clip_id"] == clip and hits[0]["caption"] == row["text"]
    assert "eleph" in " ".join(hits[0]["matched"])
