"""Training checkpoints: atomic writes, completeness checks, pruning, RNG state capture.

Layout under a run folder::

    checkpoints/step-0000400/   config.json + model.safetensors (``from_pretrained`` loads it)
                                trainer_state.pt (optimiser, scheduler, RNG, data position, ...)
                                checkpoint.json  (written last: every file's size and sha256)
    checkpoints/.tmp-<hex>-step-0000500/   a write in progress (or one a kill interrupted)

A checkpoint is built in a temporary folder, every file fsynced, then the folder is renamed into
place and the parent fsynced: a ``step-*`` folder is complete by construction. A reader still
checks ``checkpoint.json`` against the files (a file deleted or truncated later makes the
checkpoint invalid: it is skipped, never loaded) and removes leftovers of interrupted writes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warehouse.atomic import TMP_PREFIX, fsync_dir, sha256_file, tmp_path_for

STEP_RE = re.compile(r"^step-(\d{7,})$")
STATE_FILE = "trainer_state.pt"
MANIFEST_FILE = "checkpoint.json"
REQUIRED = ("config.json", "model.safetensors", STATE_FILE)


def step_dir(root: Path, step: int) -> Path:
    """``root/step-XXXXXXX`` for an optimiser step."""
    return root / f"step-{step:07d}"


def _fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [*(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fsync_dir(d)


def save_checkpoint(root: Path, step: int, model: Any, state: dict[str, Any], *,
                    hold: Callable[[Path], None] | None = None) -> Path:
    """Write the checkpoint of ``step`` atomically under ``root``.

    Args:
        root: the run's ``checkpoints`` folder (created).
        step: optimiser steps done.
        model: a model with ``save_pretrained(folder)``.
        state: trainer state (tensors, numbers, strings, lists, dicts only).
        hold: test hook, called with the temporary folder after the model and trainer state are
            written and before the manifest and the rename (a test kills the process there).

    Returns:
        The final checkpoint folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = tmp_path_for(final)
    try:
        model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
        if hold is not None:
            hold(tmp)
        files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
                 for f in sorted(tmp.iterdir()) if f.is_file()}
        (tmp / MANIFEST_FILE).write_text(json.dumps({"step": step, "files": files}, indent=1))
        _fsync_tree(tmp)
        if final.exists():  # a re-run of the same step (resume from an older checkpoint)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def is_complete(folder: Path, *, verify_hashes: bool = False) -> bool:
    """Whether ``folder`` holds a whole checkpoint: manifest present, every file listed there
    present with its size (and, with ``verify_hashes``, its sha256), required files listed."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not all(name in files for name in REQUIRED):
        return False
    for name, info in files.items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != info["bytes"]:
            return False
        if verify_hashes and sha256_file(f) != info["sha256"]:
            return False
    return True


def clean_partial(root: Path) -> list[Path]:
    """Remove temporary folders left by interrupted checkpoint writes; return them."""
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Checkpoint folders named ``step-*`` under ``root`` (complete or not), by step."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := STEP_RE.match(p.name))]
    return sorted(found)


def latest_complete(root: Path) -> tuple[int, Path] | None:
    """The newest checkpoint that passes :func:`is_complete` with hashes, or None."""
    for step, folder in reversed(checkpoints(root)):
        if is_complete(folder, verify_hashes=True):
            return step, folder
    return None


def prune(root: Path, keep_last: int, *, protect: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints (never ``protect``), and
    every incomplete ``step-*`` folder older than the newest complete one."""
    ckpts = checkpoints(root)
    complete = [(s, p) for s, p in ckpts if is_complete(p)]
    keep = {p for _, p in complete[-max(1, keep_last):]}
    newest = complete[-1][0] if complete else -1
    doomed = [p for s, p in ckpts if p not in keep and p != protect and s <= newest]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    if doomed:
        fsync_dir(root)
    return doomed


def load_state(folder: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint folder (safe loading: tensors and plain types)."""
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def hold_forever(marker: Path) -> Callable[[Path], None]:
    """Test hook: touch ``marker`` (with the held folder's path in it), then sleep until
    killed. Lets a test SIGKILL a training process at an exact point."""

    def _hold(where: Path) -> None:
        marker.write_text(str(where))
        while True:
            time.sleep(1)

    return _hold
