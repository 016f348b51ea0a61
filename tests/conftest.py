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

import pytest  # noqa: E402

# the small pretraining warehouse and its corpus files (tests/pretrain_fixtures.py)
from tests.pretrain_fixtures import corpus, feat_corpus, tokenizer, warehouse  # noqa: E402,F401


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
