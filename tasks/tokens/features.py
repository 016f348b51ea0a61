"""Per-clip features: reader (decode by timestamp, parallel) -> mapper (batched model) -> rows.

The reader decodes each video once per window of clips (``chunk_clips`` at a time, bounded
memory) in a pool of threads (ffmpeg does the work in subprocesses, so threads run truly in
parallel), ahead of the model; the mapper runs the encoder on full batches on the best device
(bf16 autocast on CUDA). Decoding and compute overlap: while the model runs on one batch, the
pool keeps decoding the next windows.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tasks.shared import media
from tasks.shared.errors import IngestError


@dataclass(frozen=True)
class ClipRef:
    """A clip to encode and the file it is read from."""

    clip_id: str
    video_id: str
    path: str
    start_s: float
    end_s: float


class FrameEncoder(Protocol):
    """What the feature pipeline needs from an encoder."""

    name: str
    version: str
    dim: int
    n_frames: int  # frames per clip
    size: int  # square frame side

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, T, S, S, 3) uint8 -> (vectors (B, dim) float32, logits (B, K) or None)."""
        ...


def _fit_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """Exactly ``n`` frames: a short final clip repeats its last frame."""
    if len(frames) >= n:
        return frames[:n]
    pad = np.repeat(frames[-1:], n - len(frames), axis=0)
    return np.concatenate([frames, pad])


def decode_window(clips: list[ClipRef], n_frames: int, size: int, clip_s: float,
                  limits: media.Limits) -> list[tuple[ClipRef, np.ndarray | None, str | None]]:
    """Decode consecutive clips of one video with one ffmpeg run; split frames per clip.

    Frames are sampled at ``n_frames / clip_s`` fps by timestamp, so a full clip gets exactly
    ``n_frames``. Returns (clip, frames (T, S, S, 3) or None, error or None) per clip.
    """
    fps = n_frames / clip_s
    start, end = clips[0].start_s, clips[-1].end_s
    try:
        frames, ts = media.decode_frames(Path(clips[0].path), start, end, fps, size, limits)
    except IngestError as e:
        return [(c, None, e.message) for c in clips]
    out: list[tuple[ClipRef, np.ndarray | None, str | None]] = []
    for c in clips:
        sel = frames[(ts >= c.start_s - 1e-6) & (ts < c.end_s - 1e-6)]
        if len(sel) == 0:
            out.append((c, None, f"no frame decoded in [{c.start_s}, {c.end_s}) of {c.path}"))
        else:
            out.append((c, _fit_frames(sel, n_frames), None))
    return out


def windows(clips: list[ClipRef], chunk_clips: int) -> list[list[ClipRef]]:
    """Group clips into runs of consecutive clips of one video, at most ``chunk_clips`` each."""
    out: list[list[ClipRef]] = []
    for c in sorted(clips, key=lambda c: (c.video_id, c.start_s)):
        last = out[-1] if out else None
        if (last and last[-1].video_id == c.video_id and len(last) < chunk_clips
                and math.isclose(last[-1].end_s, c.start_s, abs_tol=1e-3)):
            last.append(c)
        else:
            out.append([c])
    return out


def read_clips(clips: list[ClipRef], n_frames: int, size: int, clip_s: float, *,
               workers: int = 2, chunk_clips: int = 32, ahead: int = 4,
               limits: media.Limits | None = None,
               ) -> Iterator[tuple[ClipRef, np.ndarray | None, str | None]]:
    """Decode clips in parallel, ``ahead`` windows per worker in flight, in input order."""
    limits = limits or media.Limits()
    todo = deque(windows(clips, chunk_clips))
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode") as pool:
        inflight: deque[Future] = deque()
        while todo or inflight:
            while todo and len(inflight) < max(1, workers) * ahead:
                inflight.append(pool.submit(decode_window, todo.popleft(), n_frames, size,
                                            clip_s, limits))
            yield from inflight.popleft().result()


def encode_clips(encoder: FrameEncoder, clips: list[ClipRef], clip_s: float, *,
                 batch_size: int = 16, workers: int = 2, chunk_clips: int = 32,
                 on_batch: Callable[[int], None] | None = None,
                 limits: media.Limits | None = None) -> tuple[list[dict[str, Any]], list[tuple]]:
    """Run the reader -> mapper pipeline over ``clips``.

    Returns:
        (rows for ``clip_features`` without run metadata, failures as (clip, message)).
    """
    rows: list[dict[str, Any]] = []
    failures: list[tuple[ClipRef, str]] = []
    batch: list[tuple[ClipRef, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        vecs, logits = encoder.encode(np.stack([f for _, f in batch]))
        for i, (c, _) in enumerate(batch):
            rows.append({"clip_id": c.clip_id, "video_id": c.video_id, "encoder": encoder.name,
                         "encoder_version": encoder.version, "dim": int(vecs.shape[1]),
                         "vector": vecs[i].astype(np.float32).tolist(),
                         "logits": None if logits is None else logits[i].tolist(),
                         "n_frames": encoder.n_frames})
        if on_batch:
            on_batch(len(batch))
        batch.clear()

    for clip, frames, err in read_clips(clips, encoder.n_frames, encoder.size, clip_s,
                                        workers=workers, chunk_clips=chunk_clips, limits=limits):
        if frames is None:
            failures.append((clip, err or "decode failed"))
            continue
        batch.append((clip, frames))
        if len(batch) >= batch_size:
            flush()
    flush()
    return rows, failures
