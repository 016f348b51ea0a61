"""``videobert serve``: the search page and its JSON API (FastAPI, served by uvicorn).

Reads only the published catalog and indices, so it works while a flow writes. The query
encoder and the indices are loaded once per process (per encoder and mode) and reused.
Media and thumbnails are served by warehouse id only: a request never names a path. A video
is served from the file the warehouse recorded, only when that file still lies inside the
folder it was ingested from (links out of it are refused) and has the recorded size; HTTP
Range requests get 206 so the page can seek. Every error is JSON with a status code.

API (also at ``/docs``): ``GET /api/search?q=&k=&encoder=&mode=`` (the objects of
``videobert search --format json``), ``GET /api/clips/{clip_id}`` (the clip, its video, the
text said there, its nearest clips), ``GET /api/runs`` (model runs, the newest evaluation,
promotions), ``GET /api/health``; ``GET /media/videos/{video_id}``,
``GET /media/thumbs/{clip_id}.jpg``, ``GET /media/reports/{eval_id}/recall_at_k.png``.
"""

import re
import subprocess
import threading
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime

MAX_QUERY = 500
MAX_K = 100
_ID = re.compile(r"^[A-Za-z0-9._:@+-]{1,200}$")


def create_app(home: Path, token: str | None = None) -> FastAPI:
    """The FastAPI app over data home ``home`` (``token``: required as ?token= or a bearer)."""
    from tasks.retrieval.reader import CatalogReader
    from tasks.retrieval.search import MODES, open_searcher, search
    from warehouse.store import Warehouse

    home = Path(home).resolve()
    wh = Warehouse(home)
    app = FastAPI(title="videobert", description="Search your videos by what is seen and said.")
    searchers: dict[tuple[str | None, str], Any] = {}
    lock = threading.Lock()

    reader = CatalogReader(wh)

    def searcher(encoder: str | None, mode: str) -> Any:
        with lock:
            key = (encoder, mode)
            if key not in searchers:
                searchers[key] = open_searcher(home, encoder, mode=mode)
                searchers[key].reader = reader
            return searchers[key]

    def dense_part(encoder: str | None) -> Any:
        """A loaded searcher of ``encoder`` (its dense index serves nearest clips whatever its
        mode), so a clip page does not load the model and index a second time."""
        with lock:
            for (enc, _mode), s in searchers.items():
                if enc == encoder:
                    return s
        return searcher(encoder, "dense")

    def rows(sql: str, params: list | None = None) -> list[dict[str, Any]]:
        con = reader.catalog()
        try:
            rel = con.execute(sql, params or [])
            cols = [d[0] for d in rel.description]
            return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
        finally:
            con.close()

    def check_id(value: str, what: str) -> str:
        if not _ID.match(value) or value in (".", ".."):
            raise HTTPException(404, f"no such {what}")
        return value

    async def require_token(request: Request, call_next: Any) -> Any:
        if request.url.path not in ("/api/health",):
            given = request.query_params.get("token") or request.headers.get(
                "authorization", "").removeprefix("Bearer ")
            if given != token:
                return JSONResponse({"error": "a token is required (?token=...)"}, 401)
        return await call_next(request)

    if token:  # only then: an HTTP middleware costs every request
        app.middleware("http")(require_token)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(Exception)
    async def any_error(_request: Request, exc: Exception) -> JSONResponse:
        from tasks.shared.errors import InputError

        if isinstance(exc, InputError):
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (resources.files("videobert") / "web" / "index.html").read_text("utf-8")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Liveness and what is published."""
        return {"status": "ok", "home": str(home), "catalog": wh.catalog_path.is_file()}

    @app.get("/api/search")
    async def api_search(q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY)],
                   k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
                   encoder: Annotated[str | None, Query(pattern="^(videobert|concepts)$")]
                   = None,
                   mode: Annotated[str, Query(pattern="^(" + "|".join(MODES) + ")$")] = "auto"
                   ) -> JSONResponse:
        """The same results and fields as ``videobert search --format json``."""
        # async: ~2 ms of CPU under the GIL, cheaper on the event loop than a thread hand-off
        s = searcher(encoder, mode)
        return JSONResponse(search(home, s, q, k))  # plain JSON: no response-model pass

    @app.get("/api/clips/{clip_id}")
    def api_clip(clip_id: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 8) -> dict[str, Any]:
        """A clip, its video, the text said there and its nearest clips."""
        from warehouse import queries

        check_id(clip_id, "clip")
        found = rows(queries.load("search_clip_details"), [[clip_id]])
        if not found:
            raise HTTPException(404, "no such clip")
        clip = found[0]
        video = rows("SELECT video_id, duration_s, width, height, codec, first_path "
                     "FROM videos WHERE video_id = ?", [clip["video_id"]])
        return {"clip": clip, "video": video[0] if video else None,
                "nearest": _nearest(dense_part(None), rows, clip_id, k)}

    @app.get("/api/runs")
    def api_runs() -> dict[str, Any]:
        """Model runs, the newest evaluation table and the promotion decisions."""
        runs = rows("SELECT model_run, kind, preset, parent_run, status, device, steps, "
                    "started_at, finished_at FROM model_runs ORDER BY started_at DESC")
        newest = rows("SELECT eval_id, split FROM eval_results ORDER BY \"at\" DESC LIMIT 1")
        table = rows("SELECT encoder, model_run, level, direction, mode, n_queries, r1, r5, "
                     "r10, mdr, mnr FROM eval_results WHERE eval_id = ? ORDER BY encoder, "
                     "level, direction, mode", [newest[0]["eval_id"]]) if newest else []
        promos = rows("SELECT model_run, previous_run, promoted, metric, value, "
                      "previous_value, reason, \"at\" FROM promotions ORDER BY \"at\" DESC")
        return {"runs": runs, "evaluation": newest[0] if newest else None, "table": table,
                "promotions": promos}

    @app.get("/media/videos/{video_id}")
    def media_video(video_id: str) -> FileResponse:
        """The video file (Range requests: 206), from the warehouse's record only."""
        check_id(video_id, "video")
        for f in rows("SELECT abs_path, root, size_bytes FROM video_files WHERE video_id = ? "
                      "ORDER BY path", [video_id]):
            path = _safe_file(f["abs_path"], f["root"], f["size_bytes"])
            if path is not None:
                return FileResponse(path, media_type=_media_type(path))
        raise HTTPException(404, "no such video (or its file moved)")

    @app.get("/media/thumbs/{clip_id}.jpg")
    def media_thumb(clip_id: str) -> FileResponse:
        """The clip's middle frame, extracted once with ffmpeg and cached in the data home."""
        check_id(clip_id, "clip")
        target = home / "thumbs" / f"{clip_id}.jpg"
        if not target.is_file():
            clip = rows("SELECT c.start_s, c.end_s, f.abs_path, f.root, f.size_bytes FROM clips c "
                        "JOIN video_files f USING (video_id) WHERE c.clip_id = ?", [clip_id])
            src = next((p for p in (_safe_file(r["abs_path"], r["root"], r["size_bytes"])
                                    for r in clip) if p), None)
            if src is None:
                raise HTTPException(404, "no such clip")
            _thumbnail(src, (clip[0]["start_s"] + clip[0]["end_s"]) / 2, target)
        return FileResponse(target, media_type="image/jpeg")

    @app.get("/media/reports/{eval_id}/recall_at_k.png")
    def media_report(eval_id: str) -> FileResponse:
        """The recall@K curves of an evaluation."""
        check_id(eval_id, "evaluation")
        if not rows("SELECT 1 FROM eval_results WHERE eval_id = ? LIMIT 1", [eval_id]):
            raise HTTPException(404, "no such evaluation")
        path = home / "reports" / eval_id / "recall_at_k.png"
        if not path.is_file():
            raise HTTPException(404, "no report image")
        return FileResponse(path, media_type="image/png")

    return app


def _nearest(s: Any, rows: Any, clip_id: str, k: int) -> list[dict[str, Any]]:
    """The clips nearest ``clip_id`` by the live encoder's clip embeddings."""
    import numpy as np

    from warehouse import queries

    vec = rows(queries.load("clip_embeddings_of"), [s.encoder, s.model_run, [clip_id]])
    if not vec:
        return []
    scores, ids = s.index.search(np.asarray([vec[0]["vector"]], np.float32), k + 1)
    hits = [(str(i), float(x)) for i, x in zip(ids[0], scores[0], strict=True)
            if i is not None and str(i) != clip_id][:k]
    details = {r["clip_id"]: r for r in rows(queries.load("search_clip_details"),
                                             [[h[0] for h in hits]])}
    return [details[c] | {"score": round(x, 6)} for c, x in hits if c in details]


def _safe_file(abs_path: str | None, root: str | None, size: int | None) -> Path | None:
    """The recorded file, when it still lies inside its ingest root (links resolved) and has
    the recorded size; else None."""
    if not abs_path or not root:
        return None
    try:
        real, base = Path(abs_path).resolve(strict=True), Path(root).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if base not in real.parents or not real.is_file():
        return None
    if size is not None and real.stat().st_size != size:
        return None
    return real


def _media_type(path: Path) -> str:
    return {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
            ".webm": "video/webm", ".mkv": "video/x-matroska", ".mpg": "video/mpeg",
            ".mpeg": "video/mpeg"}.get(path.suffix.lower(), "application/octet-stream")


def _thumbnail(src: Path, at_s: float, target: Path) -> None:
    """One JPEG frame of ``src`` at ``at_s`` seconds, 320 px wide, written atomically."""
    from tasks.shared.ffbin import find_tools
    from warehouse.atomic import write_bytes_atomic

    p = subprocess.run([str(find_tools().ffmpeg), "-v", "error", "-ss", f"{at_s:.3f}", "-i",
                        str(src), "-frames:v", "1", "-vf", "scale=320:-2", "-f", "image2",
                        "-c:v", "mjpeg", "-q:v", "4", "pipe:1"],
                       capture_output=True, timeout=60, check=False)
    if p.returncode != 0 or not p.stdout:
        raise RuntimeError(f"ffmpeg could not extract a frame: {p.stderr[-300:]!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(p.stdout, target)
