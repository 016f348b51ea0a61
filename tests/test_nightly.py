"""Nightly flow on a small synthetic corpus: a first run trains and promotes, a second run with
no new data skips training, a worse candidate is not promoted, and a second nightly run on the
same home is refused while one holds the lock (real flows, DuckDB, FAISS, I3D and MiniLM)."""

from __future__ import annotations

import pytest

from warehouse.store import Warehouse

SYN_VIDEOS = 20  # one block of the generator: 16 train, 2 val, 2 test videos


@pytest.fixture(scope="module")
def nightly(prefect_harness, tmp_path_factory) -> dict:
    """Two nightly runs on the same synthetic corpus; returns the home and both results."""
    from flows.nightly import NightlyParams, nightly_flow
    from tasks.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("nightly")
    home = root / "home"
    corpus = generate_synthetic(root / "syn", SYN_VIDEOS, seed=0, workers=2)
    params = NightlyParams(home=str(home), sources=[str(corpus.root)], pretrain_steps=20,
                           pretrain_batch_size=16, finetune_steps=10, finetune_batch_size=16,
                           levels=2, branching=4, min_points_per_token=2, device="cpu")
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
    from tasks import model_runs
    from tasks import nightly as nt

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
    from tasks import nightly as nt

    home = tmp_path / "home"
    with nt.nightly_lock(home), pytest.raises(nt.NightlyBusy, match="another nightly run"), \
            nt.nightly_lock(home):
        pass


def test_crash_cleanup_marks_stale_running_runs_failed(tmp_path):
    import datetime as dt

    from tasks import model_runs
    from tasks import nightly as nt
    from warehouse.store import utcnow

    wh = Warehouse(tmp_path / "home")
    now = utcnow()
    for run, started in (("pretrain-stale", now - dt.timedelta(hours=1)),
                         ("pretrain-current", now + dt.timedelta(seconds=1))):
        model_runs.upsert(wh, {"model_run": run, "kind": "pretrain", "preset": "tiny",
                               "status": "running", "config_json": "{}",
                               "started_at": started}, purpose="test")
    (wh.staging_dir / "leftover").mkdir(parents=True)  # a killed run's staged part
    assert nt.crash_cleanup(wh, started_before=now) == ["pretrain-stale"]
    status = dict(wh.connect().execute("SELECT model_run, status FROM model_runs").fetchall())
    assert status == {"pretrain-stale": "failed", "pretrain-current": "running"}
    assert not (wh.staging_dir / "leftover").exists()
    assert nt.crash_cleanup(wh, started_before=now) == []  # idempotent
