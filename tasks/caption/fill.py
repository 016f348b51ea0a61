"""Fill ``generated_captions``: a caption for every clip that has none from a caption model.

Work goes in chunks; each chunk is one atomic warehouse commit, so a run killed at any moment
loses at most the chunk in flight, and a rerun picks up the clips still without a caption
(the chunks it forms are those the first run would have formed next: same batches, same
captions). A clip never gets two rows for one model run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from models.caption_decoding import Decoding
from models.captioner import VideoCaptioner
from tasks.caption.data import ClipSet
from tasks.caption.describe import describe
from tasks.shared.progress import Progress
from warehouse import queries
from warehouse.store import Warehouse, utcnow


def captioned(wh: Warehouse, model_run: str) -> set[str]:
    """Clip ids with a caption from ``model_run``."""
    con = wh.connect()
    try:
        return {r[0] for r in con.execute(queries.load("captioned_clip_ids"),
                                          [model_run]).fetchall()}
    finally:
        con.close()


def fill(wh: Warehouse, model: VideoCaptioner, tokenizer: Any, clips: ClipSet, model_run: str,
         dec: Decoding, *, device: torch.device | str = "cpu", chunk: int = 512,
         batch: int = 64, progress: bool = True,
         after_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Caption the clips of ``clips`` that have no ``model_run`` caption yet.

    Args:
        wh: the warehouse (written through its writer lock, one commit per chunk).
        model, tokenizer: the captioner and WordPiece tokenizer.
        clips: candidate clips (all of them, in video/time order).
        model_run: the caption run (``generated_captions.model_run``).
        dec: decoding parameters.
        chunk: clips per commit (a multiple of ``batch`` keeps reruns on the same batches).
        after_chunk: called with the number of chunks committed (tests hold the process there).

    Returns:
        ``added`` (rows written), ``skipped`` (clips that had one), ``chunks``.
    """
    done = captioned(wh, model_run)
    todo = clips.subset(i for i, c in enumerate(clips.clip_ids) if c not in done)
    params = json.dumps(dec.as_dict(), sort_keys=True)
    added = n_chunks = 0
    with Progress(progress).task("captions", len(todo)) as tick:
        for s in range(0, len(todo), chunk):
            part = todo.subset(range(s, min(s + chunk, len(todo))))
            caps = describe(model, tokenizer, part, dec, device=device, batch=batch,
                            progress=False)
            now = utcnow()
            rows = [{"clip_id": c, "video_id": v, "model_run": model_run, "start_s": a,
                     "end_s": b, "text": t, "score": sc, "decoding_json": params,
                     "created_at": now}
                    for c, v, a, b, (t, sc) in zip(part.clip_ids, part.video_ids, part.starts,
                                                   part.ends, caps, strict=True)]
            with wh.writer(wait_s=120, purpose="captions") as w:
                w.commit([w.stage("generated_captions", rows)], publish="auto",
                         message=f"captions {model_run}: {len(rows)} clips")
            added += len(rows)
            n_chunks += 1
            tick(len(rows))
            if after_chunk is not None:
                after_chunk(n_chunks)
    return {"added": added, "skipped": len(clips) - len(todo), "chunks": n_chunks}
