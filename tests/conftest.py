"""Test configuration: isolated Prefect home, telemetry off, Prefect's test harness.

PREFECT_HOME must point at a temp dir before prefect is imported anywhere, so the test run
never touches ~/.prefect and result storage is isolated.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="videobert-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("VIDEOBERT_HOME", None)

# Parallel runs (pytest-xdist; `-n auto --dist loadgroup` in pyproject.toml): the workers share
# the cores, so each one's torch/OpenMP (and its subprocesses') gets its share of them instead
# of every worker spinning a thread per core. Set before torch is imported anywhere.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)

import pytest  # noqa: E402

# the small pretraining warehouse and its corpus files (tests/pretrain_fixtures.py)
from tests.pretrain_fixtures import corpus, feat_corpus, tokenizer, warehouse  # noqa: E402,F401

#: session fixtures costly enough that the files using them run on one worker, built once
_SHARED_FIXTURES = ("sample_run",)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core, at most 4 (the test files' big fixtures, not the cores,
    bound the speed-up beyond that, and each worker holds its own torch and Prefect)."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def pytest_collection_modifyitems(config, items) -> None:
    """Groups for ``--dist loadgroup``: a test file runs whole on one worker (its module
    fixtures are built once), and the files that use a shared session fixture run together."""
    files = [item.nodeid.split("::", 1)[0] for item in items]
    groups = dict(zip(files, files, strict=True))
    for item, name in zip(items, files, strict=True):
        groups[name] = next((f for f in _SHARED_FIXTURES if f in item.fixturenames),
                            groups[name])
    for item, name in zip(items, files, strict=True):
        item.add_marker(pytest.mark.xdist_group(groups[name]))


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect server (SQLite in the temp PREFECT_HOME) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """An empty data home."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> dict:
    """``videobert run`` on the built-in sample corpus, once per session, as a user runs it
    (a subprocess; 5 pretraining and 5 fine-tuning steps): its home and output."""
    import subprocess
    import sys

    base = tmp_path_factory.mktemp("sample-run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"VIDEOBERT_HOME": str(base / "home"), "COLUMNS": "250", "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    p = subprocess.run([sys.executable, "-m", "videobert.cli", "run", "--pretrain-steps", "5",
                        "--finetune-steps", "5"], capture_output=True, text=True, env=env,
                       timeout=900, cwd=base)
    assert p.returncode == 0, p.stderr[-3000:]
    return {"home": base / "home", "stdout": p.stdout, "stderr": p.stderr}
