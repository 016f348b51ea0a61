"""prefect.yaml on a real Prefect server: deploy, trigger, run with a real worker, check.

The test starts ``prefect server start`` on 127.0.0.1 (a free port, its own PREFECT_HOME in a
temp dir, telemetry off), creates the ``videobert-cpu`` and ``videobert-gpu`` process pools,
runs ``prefect --no-prompt deploy --all`` from the repository root, creates a flow run of a
deployment through the REST API, runs it with ``prefect worker start --run-once`` and checks
the run's final state through the API and its rows in the warehouse. The server and every
process it started are stopped (SIGINT, then the whole process group) even when the test
fails. Cases: ``ingest`` and ``nightly-retrain`` (the whole nightly flow on the sample corpus
with a tiny, short pretraining); add a :class:`DeploymentCase` to cover another deployment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasks.ingest.samples import SampleCorpus, build_sample_corpus
from warehouse.store import Warehouse

REPO = Path(__file__).resolve().parents[1]
POOL = "videobert-cpu"
GPU_POOL = "videobert-gpu"  # training deployments target it; deploying needs it to exist
PREFECT = [sys.executable, "-m", "prefect"]


@dataclass(frozen=True)
class PrefectServer:
    """A running server: its API URL and the environment that points Prefect's CLI at it."""

    api_url: str
    env: dict[str, str]

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One JSON request to the server's REST API."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def prefect(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``prefect ARGS`` against this server from the repository root; fail loudly."""
        p = _run_group([*PREFECT, *args], self.env, timeout)
        if p.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed ({p.returncode}):\n"
                                 f"{p.stdout[-8000:]}")
        return p


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(proc: subprocess.Popen) -> bool:
    """Whether any process of ``proc``'s process group (``proc`` leads it) still exists."""
    proc.poll()  # reap the leader if it exited: a zombie still counts as a group member
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_group(proc: subprocess.Popen, sig: signal.Signals, grace_s: float) -> bool:
    """Signal ``proc``'s process group, wait up to ``grace_s`` for it to be gone; True when
    gone."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace_s
    while _group_alive(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _stop_group(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGINT (Prefect's server and worker stop cleanly on it), then SIGTERM, then SIGKILL,
    for the process and everything it started (its own session/process group)."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if _kill_group(proc, sig, wait):
            break
    proc.wait(timeout=10)


def _run_group(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group from the repository root; the group is stopped
    on return, so nothing it started (a flow-run subprocess) outlives it."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc, grace_s=10)
        out, _ = proc.communicate()
        raise AssertionError(f"{cmd} did not finish in {timeout} s:\n{out[-4000:]}") from None
    finally:
        if proc.poll() is not None:
            _kill_group(proc, signal.SIGKILL, 5)  # leftovers of a finished command
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _server_env(prefect_home: Path, api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "VIDEOBERT_"))}
    env.update(PREFECT_HOME=str(prefect_home), PREFECT_API_URL=api_url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_SERVER_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO",
               PYTHONUNBUFFERED="1")
    return env


def _wait_healthy(proc: subprocess.Popen, api_url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited ({proc.returncode}):\n"
                                 f"{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {timeout} s:\n"
                         f"{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[PrefectServer]:
    """A real Prefect server on loopback with the videobert pools and prefect.yaml
    deployed; stopped, with every process it started, at the end (even on failure)."""
    base = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _server_env(base / "prefect-home", api_url)
    log = base / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=base, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(proc, api_url, log, timeout=180)
        server = PrefectServer(api_url, env)
        for pool in (POOL, GPU_POOL):
            server.prefect("work-pool", "create", pool, "--type", "process")
        server.prefect("--no-prompt", "deploy", "--all", timeout=300)
        yield server
    finally:
        _stop_group(proc)
    assert not _group_alive(proc), "processes of the Prefect server survived"


@dataclass(frozen=True)
class DeploymentCase:
    """A deployment to trigger, its parameters, and what its results must look like.

    Attributes:
        name: ``FLOW/DEPLOYMENT`` as ``prefect deployment run`` takes it.
        parameters: (sample corpus, data home) -> the flow run's parameters.
        check: (sample corpus, data home) -> None; asserts the results in the data home.
    """

    name: str
    parameters: Callable[[SampleCorpus, Path], dict[str, Any]]
    check: Callable[[SampleCorpus, Path], None]


def _check_ingest(corpus: SampleCorpus, home: Path) -> None:
    con = Warehouse(home).connect()
    names = {Path(p).name for (p,) in con.sql("SELECT path FROM video_files").fetchall()}
    clips = con.sql("SELECT count(*) FROM clips").fetchall()[0][0]
    segments = con.sql("SELECT count(*) FROM text_segments").fetchall()[0][0]
    runs = con.sql("SELECT n_ingested FROM ingest_runs").fetchall()
    assert names == {v.name for v in corpus.videos}
    assert clips > 10 and segments > 0, (clips, segments)
    assert runs == [(len(corpus.videos),)]


def _check_nightly(corpus: SampleCorpus, home: Path) -> None:
    con = Warehouse(home).connect()
    names = {Path(p).name for (p,) in con.sql("SELECT path FROM video_files").fetchall()}
    assert names == {v.name for v in corpus.videos}  # the built-in sample corpus
    runs = dict(con.sql("SELECT kind, count(*) FROM model_runs WHERE status = 'done' "
                        "GROUP BY 1").fetchall())
    assert runs == {"pretrain": 1, "finetune": 1}, runs
    live = con.sql("SELECT model_run FROM promotions WHERE promoted").fetchall()
    finetuned = con.sql("SELECT model_run FROM model_runs WHERE kind = 'finetune'").fetchall()
    assert live == finetuned
    n_clips = con.sql("SELECT count(*) FROM clips").fetchall()[0][0]
    emb = con.sql("SELECT count(*) FROM embeddings WHERE encoder = 'videobert' "
                  "AND kind = 'clip' AND model_run = ?", params=[live[0][0]]).fetchall()[0][0]
    assert emb == n_clips
    assert con.sql("SELECT count(*) FROM indices").fetchall()[0][0] > 0
    encoders = {e for (e,) in con.sql("SELECT DISTINCT encoder FROM eval_results").fetchall()}
    assert {"concepts", "videobert"} <= encoders, encoders


CASES = [
    DeploymentCase(
        name="ingest/ingest",
        parameters=lambda corpus, home: {"params": {"source": str(corpus.root),
                                                    "home": str(home), "validation": "demux"}},
        check=_check_ingest),
    DeploymentCase(  # the whole nightly flow on the built-in sample corpus, tiny and short
        name="nightly/nightly-retrain",
        parameters=lambda corpus, home: {"params": {
            "home": str(home), "sources": [], "pretrain_preset": "tiny", "pretrain_steps": 20,
            "pretrain_batch_size": 16, "finetune_steps": 10, "device": "cpu"}},
        check=_check_nightly),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_deployment_runs_on_a_worker(prefect_server: PrefectServer, case: DeploymentCase,
                                     tmp_path: Path):
    home = tmp_path / "home"
    corpus = build_sample_corpus(home / "samples" / "real")  # where the nightly flow builds it
    flow_name, deployment_name = case.name.split("/")
    dep = prefect_server.api("GET", f"/deployments/name/{flow_name}/{deployment_name}")
    assert dep["work_pool_name"] == POOL
    assert dep["pull_steps"][0]["prefect.deployments.steps.set_working_directory"] == {
        "directory": str(REPO)}
    run = prefect_server.api("POST", f"/deployments/{dep['id']}/create_flow_run",
                             {"parameters": case.parameters(corpus, home)})
    worker = prefect_server.prefect("worker", "start", "--pool", POOL, "--run-once",
                                    timeout=300)
    state = prefect_server.api("GET", f"/flow_runs/{run['id']}")["state"]
    assert state["type"] == "COMPLETED", (state, worker.stdout[-4000:])
    case.check(corpus, home)
