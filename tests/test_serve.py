"""``videobert serve`` as users meet it: a real uvicorn process over the sample corpus run, its
JSON API (parity with the CLI, Range requests, refusals), and the page in headless Chromium
(Debian's ``chromium`` + ``chromium-driver`` through Selenium; ``.ci/run`` installs them)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_cli import _env, vb
from warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.fixture(scope="module")
def server(sample_run) -> dict:
    """``videobert serve`` on a free loopback port over the sample run's home."""
    home = sample_run["home"]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "videobert.cli", "serve", "--port",
                             str(port)], env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if _get(base + "/api/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError(f"serve did not start: {proc.stdout.read()}")
    yield {"base": base, "home": home}
    proc.terminate()
    proc.wait(timeout=30)


def _val_caption(home: Path) -> tuple[str, set[str], dict[str, float]]:
    """A validation caption of an mp4 video, the clips it describes and their starts. (The
    sample corpus's two carphone videos are one recording at two qualities with the same
    captions: a caption describes the clips of both.)"""
    con = Warehouse(home).connect()
    text = con.execute(
        "SELECT t.text FROM text_segments t JOIN splits s USING (video_id) "
        "JOIN videos v USING (video_id) WHERE s.split = 'val' AND v.first_path LIKE '%.mp4' "
        "ORDER BY t.start_s LIMIT 1").fetchone()[0]
    clips = con.execute(
        "SELECT DISTINCT c.clip_id, c.start_s FROM clips c JOIN text_segments t "
        "USING (video_id) WHERE t.text = ? AND c.start_s < t.end_s AND c.end_s > t.start_s",
        [text]).fetchall()
    return text, {c for c, _ in clips}, dict(clips)


def test_search_api_matches_the_cli(server):
    query = "a man talking in a car"
    status, body, _ = _get(f"{server['base']}/api/search?q={query.replace(' ', '%20')}&k=5")
    api = json.loads(body)
    cli = json.loads(vb(server["home"], "search", query, "-k", "5", "--format", "json").stdout)
    assert status == 200 and [h["clip_id"] for h in api] == [h["clip_id"] for h in cli]
    assert api[0].keys() == cli[0].keys() and api[0]["mode"] == "hybrid"


def test_range_requests_and_refusals(server):
    base, home = server["base"], server["home"]
    _, body, _ = _get(f"{base}/api/search?q=car&k=1")
    hit = json.loads(body)[0]
    con = Warehouse(home).connect()
    path = con.execute("SELECT abs_path FROM video_files WHERE video_id = ? ORDER BY path "
                       "LIMIT 1", [hit["video_id"]]).fetchone()[0]
    status, part, headers = _get(f"{base}/media/videos/{hit['video_id']}",
                                 {"Range": "bytes=100-199"})
    assert status == 206 and part == Path(path).read_bytes()[100:200]
    assert headers["content-range"].startswith("bytes 100-199/")
    status, thumb, headers = _get(f"{base}/media/thumbs/{hit['clip_id']}.jpg")
    assert status == 200 and thumb[:2] == b"\xff\xd8" and headers["content-type"] == "image/jpeg"
    assert (home / "thumbs" / f"{hit['clip_id']}.jpg").is_file()  # cached in the data home
    for url in ("/media/videos/..%2F..%2F..%2Fetc%2Fpasswd", "/media/videos/%2Fetc%2Fpasswd",
                "/media/videos/../../etc/passwd", "/media/videos/unknown",
                "/media/thumbs/..%2Fmanifest.jpg", "/api/clips/nope",
                "/media/reports/..%2F..%2Fwarehouse/recall_at_k.png"):
        status, body, _ = _get(base + url)
        assert status == 404 and "error" in json.loads(body), (url, status, body)
    for url in (f"/api/search?q={'a' * 501}", "/api/search?q=car&k=1000", "/api/search?q=",
                "/api/search?q=car&mode=nonsense"):
        status, body, _ = _get(base + url)
        assert status == 422, (url, status)
    status, body, _ = _get(f"{base}/api/runs")
    runs = json.loads(body)
    assert status == 200 and runs["evaluation"]["split"] == "val" and runs["table"]
    assert any(p["promoted"] for p in runs["promotions"])
    status, png, _ = _get(f"{base}/media/reports/{runs['evaluation']['eval_id']}/recall_at_k.png")
    assert status == 200 and png[:4] == b"\x89PNG"


def test_a_file_is_served_only_from_inside_its_root(tmp_path: Path):
    from videobert.serve import _safe_file

    root, outside = tmp_path / "videos", tmp_path / "secret.mp4"
    root.mkdir()
    outside.write_bytes(b"x" * 10)
    (root / "ok.mp4").write_bytes(b"y" * 10)
    (root / "link.mp4").symlink_to(outside)
    assert _safe_file(str(root / "ok.mp4"), str(root), 10) == (root / "ok.mp4").resolve()
    assert _safe_file(str(root / "link.mp4"), str(root), 10) is None  # a link out of the root
    assert _safe_file(str(outside), str(root), 10) is None
    assert _safe_file(str(root / "ok.mp4"), str(root), 11) is None  # replaced since ingest


def _chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert browser and driver, ("the browser test needs Debian's chromium and chromium-driver "
                                "(apt-get install chromium chromium-driver; .ci/run does it)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--mute-audio"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_the_page_finds_the_described_clip_and_plays_it_from_its_start(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    caption, described, starts = _val_caption(server["home"])
    browser = _chrome()
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(server["base"] + "/")
        box = wait.until(ec.presence_of_element_located((By.ID, "q")))
        box.send_keys(caption, Keys.ENTER)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#results .card"))
        cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")[:3]
        ids = [c.get_attribute("data-clip-id") for c in cards]
        hit = next((c for c, i in zip(cards, ids, strict=True) if i in described), None)
        assert hit is not None, (caption, ids, described)
        start = starts[hit.get_attribute("data-clip-id")]
        hit.click()
        wait.until(lambda b: b.execute_script(
            "const v = document.getElementById('player'); return v.readyState >= 1 && "
            "Math.abs(v.currentTime - arguments[0]) < 0.05", start))
        now = browser.execute_script("return document.getElementById('player').currentTime")
        assert abs(now - start) < 0.05
        wait.until(lambda b: b.execute_script(
            "return [...document.images].every(i => i.complete)"))
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "serve-page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, tmp_path / shot.name)
    finally:
        browser.quit()


def test_serve_refuses_a_home_without_a_warehouse_and_warns_off_loopback(tmp_path: Path):
    p = vb(tmp_path / "empty", "serve", check=False)
    assert p.returncode == 2 and "no warehouse" in p.stderr
    from videobert.cli_serve import _loopback

    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost")
    assert not _loopback("0.0.0.0") and not _loopback("192.168.1.5")


def test_a_token_guards_everything_but_health(sample_run):
    from fastapi.testclient import TestClient

    from videobert.serve import create_app

    client = TestClient(create_app(sample_run["home"], token="s3cret"))
    assert client.get("/api/health").status_code == 200
    denied = client.get("/api/runs")
    assert denied.status_code == 401 and "token" in denied.json()["error"]
    assert client.get("/api/runs", params={"token": "s3cret"}).status_code == 200
    ok = client.get("/api/search", params={"q": "car"},
                    headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()[0]["rank"] == 1


def test_a_clip_page_reuses_the_searcher_a_search_loaded(sample_run, monkeypatch):
    """The model and index load once per encoder: a clip's nearest clips come from the
    searcher the search already loaded (the real loader, counted)."""
    from fastapi.testclient import TestClient

    import tasks.retrieval.search as search_mod
    from videobert.serve import create_app

    loads: list[str] = []
    real = search_mod.open_searcher

    def counted(*args, **kwargs):
        loads.append(kwargs.get("mode", "auto"))
        return real(*args, **kwargs)

    monkeypatch.setattr(search_mod, "open_searcher", counted)
    client = TestClient(create_app(sample_run["home"]))
    hit = client.get("/api/search", params={"q": "car"}).json()[0]
    page = client.get(f"/api/clips/{hit['clip_id']}", params={"k": 3}).json()
    assert page["clip"]["clip_id"] == hit["clip_id"]
    assert page["nearest"] and all(n["clip_id"] != hit["clip_id"] for n in page["nearest"])
    assert len(loads) == 1, loads
