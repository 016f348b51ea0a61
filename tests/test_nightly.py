"""Nightly flow on a small synthetic corpus: a first run trains and promotes, a second run with
no new data skips training, a worse candidate is not promoted, a second nightly run on the
same home is refused while one holds the lock, and a run SIGKILLed mid-way followed by a new
run converges to the uninterrupted run's results (real flows, DuckDB, FAISS, I3D and MiniLM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warehouse.store import Warehouse

SYN_VIDEOS = 20  # one block of the generator: 16 train, 2 val, 2 test videos
SMALL = {"pretrain_steps": 20, "pretrain_batch_size": 16, "finetune_steps": 10,
         "finetune_batch_size": 16, "levels": 2, "branching": 4, "min_points_per_token": 2,
         "device": "cpu"}
EVAL_COLS = "encoder, level, direction, mode, r1, r5, r10, mdr, mnr"


@pytest.fixture(scope="module")
def nightly(prefect_harness, tmp_path_factory) -> dict:
    """Two nightly runs on the same synthetic corpus; returns the home and both results."""
    from flows.nightly import NightlyParams, nightly_flow
    from tasks.ingest.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("nightly")
    home = root / "home"
    corpus = generate_synthetic(root / "syn", SYN_VIDEOS, seed=0, workers=2)
    params = NightlyParams(home=str(home), sources=[str(corpus.root)], **SMALL)
    first = nightly_flow(params)
    second = nightly_flow(params)
    return {"home": home, "params": params, "first": first, "second": second}


def test_first_run_trains_promotes_and_evaluates(nightly):
    first, home = nightly["first"], nightly["home"]
    assert first["status"] == "trained" and first["live_before"] is None
    assert first["pretrain"]["continue_from"] is None  # nothing to continue on the first night
    cand = first["finetune"]["model_run"]
    assert first["gate"]["promoted"] and first["gate"]["model_run"] == cand
    assert first["live_run"] == cand
    con = Warehouse(home).connect()
    prom = con.execute("SELECT model_run, promoted, reason FROM promotions").fetchall()
    assert prom == [(cand, True, first["gate"]["reason"])]
    ev = first["evaluation"]
    assert ev["split"] == "test"
    n = con.execute("SELECT count(*) FROM eval_results WHERE eval_id = ? AND split = 'test' "
                    "AND model_run = ? AND encoder = 'videobert'",
                    [ev["eval_id"], cand]).fetchone()[0]
    assert n > 0
    assert con.execute("SELECT count(*) FROM eval_results WHERE split = 'val'").fetchone()[0] > 0
    status = dict(con.execute("SELECT model_run, status FROM model_runs").fetchall())
    assert status[cand] == "done" and status[first["pretrain"]["model_run"]] == "done"


def test_second_run_without_new_data_skips_training(nightly):
    first, second, home = nightly["first"], nightly["second"], nightly["home"]
    assert second["status"] == "skipped: no new data"
    assert second["live_run"] == first["live_run"]
    assert all(s["n_ingested"] == 0 for s in second["ingest"])
    con = Warehouse(home).connect()
    assert con.execute("SELECT count(*) FROM model_runs").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM promotions").fetchone()[0] == 1


def test_worse_candidate_is_not_promoted(nightly):
    from flows.finetune import FinetuneParams, finetune_flow
    from tasks.nightly import gate as nt
    from tasks.shared import model_runs

    home, first = nightly["home"], nightly["first"]
    wh = Warehouse(home)
    live = model_runs.live_run(wh)
    assert live[0] == first["live_run"]
    # a real, newer finished fine-tune: without the gate it would become live
    worse = finetune_flow(FinetuneParams(home=str(home), steps=1, batch_size=16, eval_every=1,
                                         lr=1e-9, device="cpu"))
    live_value = first["gate"]["value"]
    decision = nt.decide("r5", live_value - 10.0, live[0], live_value)
    assert not decision.promoted and "regression" in decision.reason
    nt.record_promotion(wh, model_run=worse["model_run"], previous_run=live[0], metric="r5",
                        value=live_value - 10.0, previous_value=live_value, decision=decision)
    assert model_runs.live_run(wh)[0] == live[0]
    row = wh.connect().execute("SELECT promoted, reason, previous_run FROM promotions WHERE "
                               "model_run = ?", [worse["model_run"]]).fetchone()
    assert row == (False, decision.reason, live[0])
    # rank metrics: lower is better
    assert nt.decide("mdr", 3.0, live[0], 2.0).promoted is False
    assert nt.decide("mdr", 2.0, live[0], 2.0).promoted is True


def test_second_nightly_is_refused_while_one_holds_the_lock(tmp_path):
    from tasks.nightly import gate as nt

    home = tmp_path / "home"
    with nt.nightly_lock(home), pytest.raises(nt.NightlyBusy, match="another nightly run"), \
            nt.nightly_lock(home):
        pass


def test_crash_cleanup_marks_stale_running_runs_failed(tmp_path):
    import datetime as dt

    from tasks.nightly import gate as nt
    from tasks.shared import model_runs
    from warehouse.store import utcnow

    home = tmp_path / "home"
    wh = Warehouse(home)
    now = utcnow()
    hour = dt.timedelta(hours=1)
    runs = {"pretrain-stale": now - hour,  # no lock file, started before: stale
            "pretrain-current": now + hour,  # no lock file, started after: left alone
            "pretrain-orphan": now + hour,  # its process died: nobody holds its lock
            "finetune-alive": now - hour}  # a process (this one) holds its lock
    for run, started in runs.items():
        model_runs.upsert(wh, {"model_run": run, "kind": run.split("-")[0], "preset": "tiny",
                               "status": "running", "config_json": "{}",
                               "started_at": started}, purpose="test")
    with model_runs.running(home, "pretrain-orphan"):
        assert model_runs.orphaned(home, "pretrain-orphan") is False
    assert model_runs.orphaned(home, "pretrain-orphan") is True
    assert model_runs.orphaned(home, "pretrain-stale") is None
    (wh.staging_dir / "leftover").mkdir(parents=True)  # a killed run's staged part
    with model_runs.running(home, "finetune-alive"):
        assert nt.crash_cleanup(wh, started_before=now) == ["pretrain-stale", "pretrain-orphan"]
        status = dict(wh.connect().execute("SELECT model_run, status FROM model_runs")
                      .fetchall())
        assert status == {"pretrain-stale": "failed", "pretrain-current": "running",
                          "pretrain-orphan": "failed", "finetune-alive": "running"}
        assert not (wh.staging_dir / "leftover").exists()
        assert nt.crash_cleanup(wh, started_before=now) == []  # idempotent


def _eval_rows(home: Path, model_run: str) -> list[tuple]:
    """The test-split evaluation of ``model_run`` and the baselines, without run ids."""
    con = Warehouse(home).connect()
    eval_id = con.execute("SELECT eval_id FROM eval_results WHERE split = 'test' AND model_run = ? "
                          "ORDER BY \"at\" DESC LIMIT 1", [model_run]).fetchone()[0]
    return con.execute(f"SELECT {EVAL_COLS} FROM eval_results WHERE eval_id = ? AND split = "
                       "'test' ORDER BY ALL", [eval_id]).fetchall()


def test_sigkill_mid_run_then_a_new_run_converges(nightly, tmp_path):
    """SIGKILL the nightly flow (its whole process group) once pretraining has started; a new
    run on the same home finishes and reaches the uninterrupted run's results."""
    from flows.nightly import NightlyParams, nightly_flow
    from tasks.ingest.synthetic import generate_synthetic

    corpus = generate_synthetic(tmp_path / "syn", SYN_VIDEOS, seed=0, workers=2)
    home = tmp_path / "home"
    params = NightlyParams(home=str(home), sources=[str(corpus.root)], **SMALL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    code = ("import json, sys; from flows.nightly import NightlyParams, nightly_flow; "
            "nightly_flow(NightlyParams(**json.loads(sys.argv[1])))")
    proc = subprocess.Popen([sys.executable, "-c", code, params.model_dump_json()], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    models = home / "models"
    try:
        deadline = time.monotonic() + 600
        while not (models.exists() and any(p.name.startswith("pretrain-")
                                           for p in models.iterdir())):
            assert proc.poll() is None, f"the nightly run exited ({proc.returncode}) early"
            assert time.monotonic() < deadline, "pretraining never started"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    again = nightly_flow(params)
    assert again["status"] == "trained" and again["gate"]["promoted"]
    con = Warehouse(home).connect()
    status = dict(con.execute("SELECT model_run, status FROM model_runs").fetchall())
    killed = set(status) - {again["pretrain"]["model_run"], again["finetune"]["model_run"]}
    assert {status[r] for r in killed} <= {"failed"}, status  # none left "running"
    assert set(again["cleanup"]["failed_runs"]) == killed
    for table, key in (("videos", "video_id"), ("clips", "clip_id"),
                       ("text_segments", "segment_id"), ("visual_tokens", "clip_id")):
        dup = con.execute(f"SELECT count(*) - count(DISTINCT {key}) FROM {table}").fetchone()[0]
        assert dup == 0, f"{table} has {dup} duplicate rows"
    dup = con.execute("SELECT count(*) FROM (SELECT clip_id, encoder FROM clip_features "
                      "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
    assert dup == 0
    ref = nightly["first"]
    assert again["tokenize"]["codebook"]["codebook_id"] == ref["tokenize"]["codebook"][
        "codebook_id"]
    assert _eval_rows(home, again["live_run"]) == _eval_rows(nightly["home"], ref["live_run"])


def test_run_state_skips_only_when_nothing_changed(nightly):
    """``videobert run``'s no-op fast path: same parameters, same source files and the same
    live model skip the flow; any change sends the run through the flow."""
    from tasks.nightly import run_state

    home, params = nightly["home"], nightly["params"]
    options = params.model_dump(mode="json")
    sources = options["sources"]
    live = nightly["first"]["live_run"]
    assert run_state.unchanged(home, options) is None  # nothing recorded yet
    run_state.save(home, options, live)
    assert run_state.unchanged(home, options) == live
    assert run_state.unchanged(home, options | {"pretrain_steps": 21}) is None
    video = next(Path(sources[0]).rglob("*.mp4"))
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched
    try:
        assert run_state.unchanged(home, options) is None
    finally:
        os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run_state.unchanged(home, options) == live
    extra = Path(sources[0]) / "new-notes.srt"  # a new file in a source
    extra.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    try:
        assert run_state.unchanged(home, options) is None
    finally:
        extra.unlink()
    state = json.loads((home / run_state.STATE_NAME).read_text())
    (home / run_state.STATE_NAME).write_text(json.dumps(state | {"live_run": "another-run"}))
    assert run_state.unchanged(home, options) is None  # the live model moved on
    (home / run_state.STATE_NAME).unlink()


def test_a_night_with_caption_retraining_trains_gates_and_captions_every_clip(nightly):
    """``caption_retrain``: the night trains a caption model on its new fine-tune (kept: no
    earlier one to beat), then captions every clip with it before indexing, so the index
    finds them by what they show. Runs last: it moves the home's live model on."""
    from flows.nightly import nightly_flow

    home = nightly["home"]
    params = nightly["params"].model_copy(update={"force": True, "caption_retrain": True,
                                                  "caption_steps": 10})
    night = nightly_flow(params)
    assert night["status"] == "trained"
    caps = night["captions"]
    retrain = caps["retrain"]
    assert retrain["kept"] and retrain["previous_cider"] is None
    assert retrain["val_cider"] >= 0
    con = Warehouse(home).connect()
    row = con.execute("SELECT kind, parent_run, status FROM model_runs WHERE model_run = ?",
                      [retrain["model_run"]]).fetchone()
    assert row == ("caption", night["finetune"]["model_run"], "done")
    n_clips = con.execute("SELECT count(*) FROM clips").fetchone()[0]
    assert caps["fill"]["model_run"] == retrain["model_run"]
    assert caps["fill"]["added"] == n_clips and caps["fill"]["skipped"] == 0
    written = con.execute("SELECT count(DISTINCT clip_id), count(*), min(length(text)) FROM "
                          "generated_captions WHERE model_run = ?",
                          [retrain["model_run"]]).fetchone()
    assert written[0] == written[1] == n_clips and written[2] > 0
    assert "captions" in night["seconds"]
