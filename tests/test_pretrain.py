"""Pretraining: the CLI on the sample corpus, exact resume after SIGKILL, schedule, DDP.

The data home is the built-in sample corpus (one video held out for evaluation: its caption
manifest gives it ``split: val``), ingested and tokenized by the real flows with a tiny local
CLIP as the feature encoder (any codebook serves the trainer, and it takes seconds, not I3D's
minute). Training runs the ``tiny`` preset on CPU with one thread, so runs are deterministic.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tasks.pretrain import checkpoint as ckpt
from tasks.pretrain.train import TrainConfig, TrainJob, lr_factor, make_optimizer, make_scheduler
from tests.test_cli import _env, vb
from warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample_home(prefect_harness, tmp_path_factory) -> Path:
    """The sample corpus (its manifest holds carphone_distorted out as val), ingested and
    tokenized."""
    from flows.ingest import IngestParams, ingest_flow
    from flows.visual_tokens import TokenizeParams, tokenize_flow
    from tasks.ingest.samples import build_sample_corpus
    from tests.tiny_clip import make_tiny_clip

    home = tmp_path_factory.mktemp("pretrain") / "home"
    corpus = build_sample_corpus(home / "samples" / "real")
    ingest_flow(IngestParams(source=str(corpus.root), home=str(home)))
    clip = make_tiny_clip(home / "tiny-clip")
    tokenize_flow(TokenizeParams(home=str(home), encoders=["clip"], clip_model=str(clip),
                                 codebook_encoder="clip", levels=2, branching=3))
    return home


@pytest.fixture(scope="module")
def corpus(sample_home: Path) -> Path:
    """The exported corpus file of the sample home's codebook."""
    from tasks.pretrain.data import export_corpus

    wh = Warehouse(sample_home)
    cb = wh.connect().sql("SELECT codebook_id FROM codebooks").fetchall()[0][0]
    return export_corpus(wh, cb, sample_home / "corpus")


def _job(home: Path, corpus: Path, name: str, **train) -> TrainJob:
    cfg = {"steps": 8, "warmup": 2, "lr": 1e-3, "eval_every": 3, "ckpt_every": 2,
           "keep_last": 2, "threads": 1, "device": "cpu", "deterministic": True, **train}
    return TrainJob(model_run=name, run_dir=str(home / "models" / name), corpus_path=str(corpus),
                    data={"batch_size": 4}, train=TrainConfig(**cfg), home=str(home))


def _start(job: TrainJob) -> tuple[subprocess.Popen, Path]:
    """``python -m tasks.pretrain.train --job`` in a subprocess (what torchrun runs on each GPU)."""
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"job-{time.monotonic_ns()}.json"
    path.write_text(job.model_dump_json())
    log = run_dir / f"{path.stem}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "tasks.pretrain.train", "--job", str(path)],
                                cwd=ROOT, env=_env(Path(job.home or run_dir)),
                                stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def _train(job: TrainJob) -> dict:
    proc, log = _start(job)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    return json.loads((Path(job.run_dir) / "result.json").read_text())


def _kill_when_held(job: TrainJob) -> None:
    """Run until the job's hold point, then SIGKILL it there."""
    proc, log = _start(job)
    marker = Path(job.run_dir) / "HELD"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"never reached {job.train.hold}:\n{log.read_text()[-3000:]}"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    marker.unlink()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _metrics(home: Path, run: str) -> list[tuple]:
    return Warehouse(home).connect().execute(
        "SELECT step, split, metric, value FROM training_metrics WHERE model_run = ? "
        "AND metric <> 'tokens_per_s' ORDER BY ALL", [run]).fetchall()


def test_cli_pretrain_tiny_on_the_sample_corpus(sample_home: Path):
    from models.videobert import VideoBert

    p = vb(sample_home, "pretrain", "--preset", "tiny", "--steps", "6", "--batch-size", "4",
           "--eval-every", "3", "--ckpt-every", "3", "--threads", "1", "--format", "json",
           timeout=900)
    s = json.loads(p.stdout.strip().splitlines()[-1])
    run = s["model_run"]
    assert s["steps"] == 6 and s["device"] == "cpu" and s["status"] == "done"
    assert set(s["metrics"]) == {"train", "val"}
    for split in ("train", "val"):
        assert {"loss", "loss_text_mlm", "loss_video_mlm", "loss_align"} <= set(
            s["metrics"][split])
    con = Warehouse(sample_home).connect()
    row = con.execute("SELECT status, preset, steps, codebook_id, checkpoint_path, config_json, "
                      "metrics_json, data_json, finished_at FROM model_runs WHERE model_run = ?",
                      [run]).fetchall()
    assert len(row) == 1
    status, preset, steps, codebook, rel, config, metrics, data, finished = row[0]
    assert (status, preset, steps) == ("done", "tiny", 6) and finished is not None
    assert codebook == con.sql("SELECT codebook_id FROM codebooks").fetchall()[0][0]
    assert json.loads(config)["job"]["train"]["steps"] == 6
    assert json.loads(metrics)["val"]["loss"] == pytest.approx(s["metrics"]["val"]["loss"])
    assert json.loads(data)["videos"] == 4  # the held-out video is not trained on
    per = dict(con.execute("SELECT split || '@' || step, count(*) FROM training_metrics "
                           "WHERE model_run = ? GROUP BY 1", [run]).fetchall())
    assert set(per) == {"train@3", "val@3", "train@6", "val@6"}
    assert per["val@6"] >= 7  # loss, 3 losses per objective, 3 accuracies (when counted)
    model = VideoBert.from_pretrained(sample_home / rel)
    assert model.config.codebook_id == codebook and model.config.preset == "tiny"
    assert rel == f"models/{run}/checkpoints/step-0000006"
    png = sample_home / "models" / run / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flow_resume_continues_the_unfinished_run(sample_home: Path):
    """A run whose flow died (row still 'running', last checkpoint 2 of 4): ``resume`` picks it,
    keeps its id, corpus and config, trains steps 3-4 again and registers it done, once."""
    from prefect.artifacts import Artifact

    from flows.pretrain import PretrainParams, pretrain_flow
    from warehouse.store import rewrite_without

    params = PretrainParams(home=str(sample_home), steps=4, batch_size=4, eval_every=2,
                            ckpt_every=2, seed=3, device="cpu")
    first = pretrain_flow(params)
    run = first["model_run"]
    wh = Warehouse(sample_home)
    row = wh.connect().sql(f"SELECT * FROM model_runs WHERE model_run = '{run}'").to_arrow_table()
    assert row.num_rows == 1
    killed = {**row.to_pylist()[0], "status": "running", "finished_at": None}
    with wh.writer() as w:  # what a killed flow leaves: the row it wrote at the start
        staged, old = rewrite_without(w, "model_runs", "model_run", [run])
        w.commit([*staged, w.stage("model_runs", [killed])], remove=old)
    shutil.rmtree(Path(first["checkpoint"]))

    again = pretrain_flow(params.model_copy(update={"resume": True, "steps": 99, "seed": 0}))
    assert again["model_run"] == run and again["resumed"] and again["resumed_from"] == 2
    assert again["steps"] == 4  # the stored config wins: resume never changes the recipe
    assert again["checkpoint_path"] == first["checkpoint_path"]
    assert again["metrics"]["val"] == first["metrics"]["val"]
    con = wh.connect()
    assert con.execute("SELECT status, steps FROM model_runs WHERE model_run = ?",
                       [run]).fetchall() == [("done", 4)]
    dup = con.execute("SELECT step, split, metric FROM training_metrics WHERE model_run = ? "
                      "GROUP BY ALL HAVING count(*) > 1", [run]).fetchall()
    assert dup == []
    table = Artifact.get(f"{run}-metrics")
    assert table is not None and "loss_text_mlm" in str(table.data)
    md = Artifact.get(f"{run}-loss-curve")
    assert md is not None and "loss.png" in str(md.data)

    child = pretrain_flow(params.model_copy(update={"continue_from": run, "steps": 2}))
    assert child["model_run"] != run and child["parent_run"] == run
    parent, config = wh.connect().execute("SELECT parent_run, config_json FROM model_runs "
                                          "WHERE model_run = ?",
                                          [child["model_run"]]).fetchall()[0]
    assert parent == run
    assert json.loads(config)["job"]["init_from"] == first["checkpoint_path"]


def test_kill_between_and_during_checkpoint_writes_then_resume_exactly(sample_home: Path,
                                                                       corpus: Path):
    """SIGKILL after step 5 (between checkpoints 4 and 6), then again in the middle of writing
    checkpoint 6; one complete checkpoint corrupted too. The resumed run ends with the bits of
    an uninterrupted one, and logs the same metrics once."""
    ref = _train(_job(sample_home, corpus, "ref"))
    assert ref["steps"] == 8 and ref["resumed_from"] is None
    job = _job(sample_home, corpus, "killed")
    root = Path(job.run_dir) / "checkpoints"

    _kill_when_held(job.model_copy(update={"train": job.train.model_copy(
        update={"hold": "step:5"})}))
    assert [s for s, _ in ckpt.checkpoints(root)] == [2, 4]

    resume = job.model_copy(update={"resume": True})
    _kill_when_held(resume.model_copy(update={"train": job.train.model_copy(
        update={"hold": "checkpoint:6"})}))
    partial = [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(partial) == 1 and (partial[0] / "model.safetensors").is_file()
    assert (partial[0] / ckpt.STATE_FILE).is_file()
    assert not (partial[0] / ckpt.MANIFEST_FILE).exists()
    assert [s for s, _ in ckpt.checkpoints(root)] == [2, 4]
    with open(root / "step-0000004" / "model.safetensors", "r+b") as f:
        f.truncate(1000)  # a damaged complete checkpoint is skipped, never loaded

    done = _train(resume)
    assert done["resumed_from"] == 2 and done["steps"] == 8
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert [s for s, _ in ckpt.checkpoints(root)] == [6, 8]
    a = _weights(Path(ref["checkpoint"]))
    b = _weights(Path(done["checkpoint"]))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from uninterrupted"
    first = _weights(Path(ref["run_dir"]) / "checkpoints" / "step-0000006")
    assert not all(torch.equal(first[k], a[k]) for k in a)  # training did move the weights
    ref_metrics = _metrics(sample_home, "ref")
    assert {(s, sp) for s, sp, _, _ in ref_metrics} == {
        (3, "train"), (3, "val"), (6, "train"), (6, "val"), (8, "train"), (8, "val")}
    assert _metrics(sample_home, "killed") == ref_metrics


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=20, warmup=5, lr=0.5, min_lr_ratio=0.1)
    p = torch.nn.Parameter(torch.zeros(3, 3))
    opt = make_optimizer(torch.nn.ParameterList([p]), cfg, torch.device("cpu"))
    sched = make_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.steps):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert lrs[5] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(lrs[5:], lrs[6:], strict=False))
    assert lrs[-1] > 0.05 and lrs[-1] == pytest.approx(0.05, abs=0.01)
    assert lr_factor(20, 5, 20, 0.1) == pytest.approx(0.1)
    assert lr_factor(12, 5, 20, 0.1) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 15)))


def test_param_groups_skip_decay_on_biases_and_norms():
    from models.videobert import build_model

    model = build_model("tiny", 4)
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decayed, plain = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") for p in decayed["params"])
    assert any("norm" in names[id(p)] for p in plain["params"])
    assert any(names[id(p)].endswith("bias") for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_accumulation_two_micro_batches_per_step(corpus: Path, tmp_path: Path):
    """accum=2: each optimiser step consumes two micro-batches and applies the mean of their
    gradients (checked against the same step done by hand)."""
    from models.videobert import VideoBert, build_model, text_tokenizer
    from tasks.pretrain.data import DataConfig, PretrainData
    from tasks.pretrain.train import run_job

    job = TrainJob(model_run="acc", run_dir=str(tmp_path / "acc"), corpus_path=str(corpus),
                   data={"batch_size": 4}, model_overrides={"dropout": 0.0},
                   train=TrainConfig(steps=3, accum=2, warmup=1, lr=1e-3, eval_every=100,
                                     ckpt_every=1, keep_last=3, device="cpu"))
    out = run_job(job)
    data = PretrainData(corpus, text_tokenizer(), DataConfig(batch_size=4))
    n = data.num_batches(0)
    assert (out["data_position"]["epoch"] * n + out["data_position"]["batch_index"]) == 6
    state = ckpt.load_state(Path(out["checkpoint"]))
    assert state["scheduler"]["last_epoch"] == 3
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {3}

    torch.manual_seed(0)  # what run_job does before building the model
    meta = data.corpus.meta
    model = build_model("tiny", meta["n_visual"], codebook_id=meta["codebook_id"], dropout=0.0)
    opt = make_optimizer(model, job.train, torch.device("cpu"))
    batches = iter(data.batches(0, 0))
    for _ in range(2):
        loss, _ = model(next(batches))
        (loss / 2).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), job.train.clip_norm)
    opt.step()
    after_one = VideoBert.from_pretrained(Path(job.run_dir) / "checkpoints" / "step-0000001")
    for (name, a), b in zip(model.state_dict().items(), after_one.state_dict().values(),
                            strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name


def test_batch_stream_order_positions_prefetch_and_sharding(corpus: Path):
    """Prefetching changes nothing; positions resume mid-epoch; ranks split the batches."""
    from models.videobert import text_tokenizer
    from tasks.pretrain.data import DataConfig, PretrainData
    from tasks.pretrain.train_dist import BatchStream, DistInfo

    data = PretrainData(corpus, text_tokenizer(), DataConfig(batch_size=2))
    n = data.num_batches(0)
    assert n >= 4

    def take(stream: BatchStream, k: int) -> list[tuple]:
        out = [(stream.next()["input_ids"], stream.epoch, stream.index) for _ in range(k)]
        stream.close()
        return out

    def same(a: list[tuple], b: list[tuple]) -> bool:
        return len(a) == len(b) and all(torch.equal(x[0], y[0]) and x[1:] == y[1:]
                                        for x, y in zip(a, b, strict=True))

    plain = take(BatchStream(data, 0, 0, DistInfo()), n + 2)
    assert [p[1:] for p in plain[n - 1:n + 1]] == [(0, n), (1, 1)]  # into the next epoch
    assert same(take(BatchStream(data, 0, 0, DistInfo(), prefetch=2), n + 2), plain)
    assert same(take(BatchStream(data, 0, 3, DistInfo()), 2), plain[3:5])
    k = n // 2
    for rank in (0, 1):
        got = take(BatchStream(data, 0, 0, DistInfo(rank=rank, world=2)), k)
        assert all(torch.equal(g[0], plain[2 * i + rank][0]) for i, g in enumerate(got))
        assert got[-1][1:] == (0, 2 * k)


def test_checkpoint_completeness_and_pruning(tmp_path: Path):
    from models.videobert import build_model

    model = build_model("tiny", 4)
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        ckpt.save_checkpoint(root, step, model, {"step": step})
    (root / ".tmp-abc-step-0000004").mkdir()
    (root / ".tmp-abc-step-0000004" / "config.json").write_text("{}")
    (root / "step-0000005").mkdir()  # renamed by hand, never written through save_checkpoint
    assert ckpt.latest_complete(root)[0] == 3
    assert ckpt.clean_partial(root) == [root / ".tmp-abc-step-0000004"]
    (root / "step-0000003" / ckpt.STATE_FILE).unlink()
    assert ckpt.latest_complete(root)[0] == 2
    ckpt.prune(root, keep_last=1)
    # older checkpoints go; damaged ones newer than the newest complete one are left alone
    assert [s for s, _ in ckpt.checkpoints(root)] == [2, 3, 5]
    assert ckpt.load_state(root / "step-0000002") == {"step": 2}


def test_torchrun_two_processes_on_cpu(sample_home: Path, corpus: Path):
    """DDP (gloo) under torchrun: batches sharded by rank, one writer, same weights everywhere."""
    job = _job(sample_home, corpus, "ddp", steps=4, eval_every=2, ckpt_every=2)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(job.model_dump_json())
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "-m", "tasks.pretrain.train", "--job",
                        str(run_dir / "job.json")], cwd=ROOT, env=_env(sample_home),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["device"] == "cpu x 2"
    assert result["steps"] == 4 and set(result["metrics"]) == {"train", "val"}
    n = result["data"]["batches"]
    pos = result["data_position"]
    assert pos["epoch"] * (n - n % 2) + pos["batch_index"] == 8  # 4 steps x 2 ranks
    assert [s for s, _ in ckpt.checkpoints(run_dir / "checkpoints")] == [2, 4]
    assert len(ckpt.load_state(run_dir / "checkpoints" / "step-0000004")["rng"]) == 2
    rows = _metrics(sample_home, "ddp")
    assert len(rows) == len(set(rows)) and {r[0] for r in rows} == {2, 4}


def test_metric_means_weight_each_objective_by_its_count():
    import torch

    from tasks.pretrain.metrics import MetricSums

    m = MetricSums()
    t = torch.tensor
    # a batch without joint pairs (alignment loss 0 over n 0), then one with 4 pairs
    m.add({"loss_align": t(0.0), "n_align": t(0), "correct_align": t(0),
           "loss_text_mlm": t(2.0), "n_text_mlm": t(10), "correct_text_mlm": t(5)}, t(2.0))
    m.add({"loss_align": t(0.7), "n_align": t(4), "correct_align": t(3),
           "loss_text_mlm": t(4.0), "n_text_mlm": t(30), "correct_text_mlm": t(6),
           "loss_feature": t(0.5)}, t(4.7))
    out = m.means()
    assert out["loss"] == pytest.approx(3.35)
    assert out["loss_align"] == pytest.approx(0.7) and out["acc_align"] == pytest.approx(0.75)
    assert out["loss_text_mlm"] == pytest.approx((2.0 * 10 + 4.0 * 30) / 40)
    assert out["loss_feature"] == pytest.approx(0.5)  # no count: over the batches that had it
