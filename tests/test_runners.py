"""Scale-out: task runner selection, and the feature stage on a real Dask cluster.

The Dask tests start real ``distributed.LocalCluster``s with worker *processes* (spawned, so
each worker imports torch and loads I3D itself) on loopback, and talk to the session's real
Prefect server (the test harness).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from prefect import flow, task
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import (
    build_task_runner,
    check_runner_options,
    submit_bounded,
    task_runner_for,
    with_task_runner,
)
from tests.test_cli import vb
from warehouse.store import Warehouse

FEATURE_COLUMNS = "clip_id, video_id, encoder, encoder_version, dim, n_frames, vector, logits"


@task
def where_am_i(i: int) -> tuple[int, int]:
    """The item and the id of the process that ran the task."""
    return i, os.getpid()


@flow
def spread(kind: str, address: str | None = None, workers: int | None = None,
           n: int = 6) -> dict:
    """Run ``n`` tiny tasks on the requested runner; report pids and whether the flow's own
    runner was reused."""
    with task_runner_for(kind, workers=workers, address=address) as runner:
        reused = runner is FlowRunContext.get().task_runner
        results = dict(r for _, r in submit_bounded(
            lambda i: runner.submit(where_am_i, {"i": i}), list(range(n)), 2))
    return {"results": results, "reused": reused}


def test_build_task_runner_kinds_and_errors():
    threads = build_task_runner("threads", workers=3)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    dask = build_task_runner("dask", workers=2)
    assert type(dask).__name__ == "DaskTaskRunner"
    assert dask.cluster_kwargs["n_workers"] == 2 and dask.address is None
    remote = build_task_runner("dask", address="tcp://127.0.0.1:8786")
    assert remote.address == "tcp://127.0.0.1:8786"
    with pytest.raises(ValueError, match="'spark'"):
        build_task_runner("spark")
    with pytest.raises(ValueError, match="'127.0.0.1:8786'"):
        check_runner_options("dask", "127.0.0.1:8786")
    with pytest.raises(ValueError, match="needs task_runner 'dask'"):
        check_runner_options("threads", "tcp://127.0.0.1:8786")


def test_cli_rejects_a_bad_scheduler_address(tmp_path: Path):
    p = vb(tmp_path / "home", "tokenize", "--runner", "dask", "--dask-address", "localhost:1",
           check=False)
    assert p.returncode != 0 and "'localhost:1'" in p.stderr


def test_tasks_run_on_an_existing_scheduler(prefect_harness):
    """``dask_address``: tasks run in the cluster's worker processes, not in the flow's."""
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL

    env = {"PREFECT_API_URL": PREFECT_API_URL.value()}  # a remote worker has its own setting
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=None, env=env) as cluster,
          Client(cluster) as client):
        worker_pids = set(client.run(os.getpid).values())
        out = spread("dask", address=cluster.scheduler_address)
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert sorted(out["results"]) == list(range(6))
    assert set(out["results"].values()) <= worker_pids
    assert out["reused"] is False


def test_with_task_runner_is_reused_inside_the_flow(prefect_harness):
    """A flow started with ``with_task_runner(dask)``: the flow's LocalCluster runs the tasks
    (no second cluster), in processes other than the flow's."""
    out = with_task_runner(spread, "dask", workers=2)("dask")
    assert out["reused"] is True
    pids = set(out["results"].values())
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


@pytest.fixture(scope="module")
def two_homes(prefect_harness, tmp_path_factory) -> tuple[Path, Path]:
    """The sample corpus ingested into two data homes, with the I3D weights installed."""
    from flows.ingest import IngestParams, ingest_flow
    from models.i3d_weights import install_i3d_weights
    from tasks.ingest.samples import build_sample_corpus

    base = tmp_path_factory.mktemp("runners")
    corpus = build_sample_corpus(base / "corpus")
    homes = (base / "threads", base / "dask")
    for home in homes:
        ingest_flow(IngestParams(source=str(corpus.root), home=str(home), validation="demux"))
    install_i3d_weights(homes[0] / "weights")
    shutil.copytree(homes[0] / "weights", homes[1] / "weights")
    return homes


def _features(home: Path) -> list[tuple]:
    con = Warehouse(home).connect()
    rows = con.sql(f"SELECT {FEATURE_COLUMNS} FROM clip_features ORDER BY clip_id, encoder")
    return rows.fetchall()


def test_dask_local_cluster_gives_the_thread_runner_rows(two_homes):
    """The feature stage on a 2-worker Dask LocalCluster (worker processes) writes the same
    clip_features rows as the default thread runner: ids equal, vectors within 1e-6."""
    from flows.visual_tokens import TokenizeParams, tokenize_flow

    threads_home, dask_home = two_homes
    common = {"encoders": ["i3d"], "levels": 2, "branching": 3, "clips_per_task": 6}
    # Each Dask worker runs torch on one thread (the nanny sets OMP_NUM_THREADS=1); float32
    # convolutions round differently with the number of threads (~2e-6 here), whatever the
    # task runner, so the thread runner gets one thread too.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = tokenize_flow(TokenizeParams(home=str(threads_home), **common))
    finally:
        torch.set_num_threads(torch_threads)
    b = tokenize_flow(TokenizeParams(home=str(dask_home), task_runner="dask", workers=2,
                                     **common))
    assert (a["task_runner"], b["task_runner"]) == ("threads", "dask")
    n_clips = Warehouse(threads_home).connect().sql("SELECT count(*) FROM clips").fetchall()[0][0]
    assert a["features"]["i3d"] == b["features"]["i3d"] == n_clips > 12  # several tasks
    rows_a, rows_b = _features(threads_home), _features(dask_home)
    assert [r[:6] for r in rows_a] == [r[:6] for r in rows_b]
    for col in (6, 7):  # vector, logits
        x = np.asarray([r[col] for r in rows_a], dtype=np.float64)
        y = np.asarray([r[col] for r in rows_b], dtype=np.float64)
        assert x.shape == y.shape and np.abs(x - y).max() <= 1e-6
    again = tokenize_flow(TokenizeParams(home=str(dask_home), task_runner="dask", workers=2,
                                         **common))
    assert again["features"] == {"i3d": 0}  # nothing new: incremental on Dask too
