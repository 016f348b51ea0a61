"""The command line, run as users run it: subprocesses, real Prefect, SIGKILL, readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import media_factory as mf
from tests.test_ingest import _snapshot
from warehouse.store import Warehouse


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(VIDEOBERT_HOME=str(home), DO_NOT_TRACK="1", PYTHONUNBUFFERED="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def vb(home: Path, *args: str, check: bool = True,
       timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``videobert ARGS`` with its own data home (and so its own Prefect home)."""
    p = subprocess.run([sys.executable, "-m", "videobert.cli", *args], env=_env(home),
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"videobert {args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory) -> Path:
    """24 small distinct videos, two bad files and a sidecar: enough for several batches."""
    root = tmp_path_factory.mktemp("many")
    for i in range(24):
        mf.good_video(root / f"v{i:02d}.mp4", seconds=1.5 + 0.05 * i, size=(64, 48), audio=False)
    (root / "v00.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nzero\n")
    (root / "bad.mp4").write_text("not a video")
    (root / "empty.mp4").write_bytes(b"")
    return root


def test_help_lists_subcommands(tmp_path: Path):
    p = vb(tmp_path, "--help")
    for cmd in ("doctor", "samples", "ingest", "sql", "warehouse"):
        assert cmd in p.stdout


def test_doctor_reports_ffmpeg_and_home(tmp_path: Path):
    report = json.loads(vb(tmp_path, "doctor", "--format", "json").stdout)
    names = {c["name"]: c for c in report["checks"]}
    assert names["ffprobe"]["status"] == "ok" and "from" in names["ffprobe"]["detail"]
    assert names["ffmpeg"]["status"] == "ok"
    assert "GPU" in names and "data home" in names
    assert report["home"] == str(tmp_path.resolve())
    assert vb(tmp_path, "doctor").returncode == 0


def test_sql_without_warehouse_is_a_clear_error(tmp_path: Path):
    p = vb(tmp_path, "sql", "SELECT 1", check=False)
    assert p.returncode == 1 and "no warehouse" in p.stderr and "Traceback" not in p.stderr


def test_ingest_then_sql_formats(tmp_path: Path, many_videos: Path):
    home = tmp_path / "home"
    p = vb(home, "ingest", str(many_videos), "--format", "json")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["n_ingested"] == 24 and summary["rejected"] == {"empty_file": 1,
                                                                   "not_a_video": 1}
    rows = json.loads(vb(home, "sql", "SELECT code, path FROM ingest_errors ORDER BY path",
                         "--format", "json").stdout)
    assert rows == [{"code": "not_a_video", "path": "bad.mp4"},
                    {"code": "empty_file", "path": "empty.mp4"}]
    csv_out = vb(home, "sql", "SELECT count(*) AS n FROM clips", "--format", "csv").stdout
    assert csv_out.splitlines()[0] == "n" and int(csv_out.splitlines()[1]) >= 24
    table = vb(home, "sql", "SELECT first_path FROM videos ORDER BY 1 LIMIT 1").stdout
    assert "v00.mp4" in table
    p = vb(home, "sql", "CREATE TABLE x AS SELECT 1", check=False)
    assert p.returncode == 1 and "read-only" in (p.stderr + p.stdout).lower()


def _prefect_servers_of(home: Path) -> list[int]:
    want = f"PREFECT_HOME={home.resolve() / 'prefect'}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and b"create_app" in (entry / "cmdline").read_bytes()
                    and want in (entry / "environ").read_bytes().split(b"\0")):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _wait_for(pred, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_sigkill_mid_ingest_then_rerun_converges(tmp_path: Path, many_videos: Path):
    ref = tmp_path / "ref"
    vb(ref, "ingest", str(many_videos), "--batch-size", "2")
    home = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "videobert.cli", "ingest", str(many_videos),
                             "--batch-size", "2", "--commit-every", "0"], env=_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wh = Warehouse(home)
    # kill once some, not all, batches are committed
    assert _wait_for(lambda: wh.exists() and wh.manifest()["version"] >= 4, 120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = wh.connect().sql("SELECT count(*) FROM videos").fetchall()[0][0]
    assert partial < 24, "the kill came too late to test anything"
    p = vb(home, "ingest", str(many_videos), "--batch-size", "2")
    assert _snapshot(home) == _snapshot(ref)
    # crash cleanup: the killed run's temporary Prefect server was stopped by the rerun
    assert "left behind by a killed run" in p.stderr
    time.sleep(1)
    assert not _prefect_servers_of(home)
    assert not list(wh.staging_dir.glob("*")) if wh.staging_dir.exists() else True


def test_sql_answers_while_ingest_writes(tmp_path: Path, many_videos: Path):
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-m", "videobert.cli", "ingest", str(many_videos),
                             "--batch-size", "1", "--commit-every", "0", "--publish-every",
                             "0", "--workers", "1"], env=_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wh = Warehouse(home)
    assert _wait_for(lambda: wh.catalog_path.exists(), 120)
    counts = []
    while proc.poll() is None:
        p = vb(home, "sql", "SELECT count(*) AS n FROM videos", "--format", "json", check=False)
        assert p.returncode == 0, p.stderr
        counts.append(json.loads(p.stdout)[0]["n"])
    assert proc.wait() == 0, proc.stderr.read()
    assert len(counts) >= 2 and counts == sorted(counts)
    assert any(0 < c < 24 for c in counts), counts  # some reads saw the ingest mid-way


def test_version_and_samples_command(tmp_path: Path):
    assert "videobert 0.1.0" in vb(tmp_path, "--version").stdout
    p = vb(tmp_path, "samples", "--synthetic", "4", "--seed", "3")
    real = tmp_path / "samples" / "real"
    syn = tmp_path / "samples" / "synthetic-4-seed3"
    assert str(real) in p.stdout and (syn / "captions.jsonl").is_file()
    assert len(list(real.glob("*.mp4"))) == 3 and (real / "bikes.mkv").is_file()
    rows = [json.loads(line) for line in (syn / "captions.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} <= {"train", "val", "test"} and len(rows) == 8


def test_prefect_yaml_entrypoints_load():
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    root = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((root / "prefect.yaml").read_text())
    assert spec["deployments"], "prefect.yaml declares no deployment"
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(root / dep["entrypoint"]))
        assert flow.name and set(dep.get("parameters", {})) <= set(flow.parameters.properties)


def test_no_module_shadows_the_standard_library():
    """Prefect puts an entrypoint's folder on sys.path: no flow/task file may be named like a
    standard-library module (flows/tokenize.py broke every spawned process that way)."""
    root = Path(__file__).resolve().parents[1]
    names = {p.stem for d in ("flows", "tasks", "models", "warehouse", "videobert")
             for p in (root / d).glob("*.py")}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)
