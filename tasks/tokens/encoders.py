"""Encoders behind one interface for the feature flow: I3D, CLIP, and the concepts baseline.

Each frame encoder says how many frames per clip it wants and at what size, and turns a batch
of uint8 clips into vectors. Models are loaded once per process (cached) on the best device;
on CUDA the forward pass runs under bf16 autocast.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from models.device import pick_device
from warehouse.atomic import sha256_file

I3D_FRAMES = 16  # per 1.5 s clip, as the reference evaluates I3D
I3D_DECODE = 256  # short side 256, then a 224 centre crop (the reference's evaluation)
I3D_CROP = 224


class I3DEncoder:
    """I3D (Kinetics-400): 1024-d pooled Mixed_5c features plus the 400 logits."""

    name = "i3d"
    dim = 1024
    n_frames = I3D_FRAMES
    size = I3D_DECODE

    def __init__(self, weights_dir: Path, device: str = "auto") -> None:
        from models.i3d import I3D
        from models.i3d_weights import install_i3d_weights

        self.device = pick_device(device)
        path = install_i3d_weights(Path(weights_dir))
        self.model = I3D.from_safetensors(path, self.device)
        self.version = f"i3d-k400-{sha256_file(path)[:16]}"

    @torch.inference_mode()
    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, T, S, S, 3) uint8 -> (features (B, 1024), logits (B, 400))."""
        from models.i3d import preprocess

        x = preprocess(torch.from_numpy(frames).to(self.device), crop=I3D_CROP)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            feats, logits = self.model(x)
        return feats.float().cpu().numpy(), logits.float().cpu().numpy()


class ClipFrameEncoder:
    """CLIP: a clip's embedding is the mean of its L2-normalised frame embeddings."""

    name = "clip"
    n_frames = 8

    def __init__(self, name_or_path: str, device: str = "auto") -> None:
        from models.clip import ClipEncoder

        self.clip = ClipEncoder.from_pretrained(name_or_path, device=pick_device(device))
        self.dim = self.clip.dim
        self.size = int(self.clip.preprocess.resize)  # decode at the short side CLIP resizes to
        self.version = self.clip.version

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, T, S, S, 3) uint8 -> (embeddings (B, D), None)."""
        return self.clip.encode_clips(frames), None


@dataclass(frozen=True)
class EncoderSpec:
    """What a task needs to build a frame encoder: small and picklable, so feature tasks can
    run in other processes (Dask workers) without shipping a model with every task.

    Attributes:
        kind: ``i3d`` or ``clip``.
        source: i3d: the weights folder (``<home>/weights``); clip: a CLIP folder or hub id.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
    """

    kind: Literal["i3d", "clip"]
    source: str
    device: str = "auto"


@functools.lru_cache(maxsize=4)
def load_encoder(spec: EncoderSpec) -> I3DEncoder | ClipFrameEncoder:
    """The encoder for ``spec``, loaded once per process (tasks on one worker share it)."""
    if spec.kind == "i3d":
        return I3DEncoder(Path(spec.source), spec.device)
    if spec.kind == "clip":
        return ClipFrameEncoder(spec.source, spec.device)
    raise ValueError(f"unknown frame encoder {spec.kind!r}: use 'i3d' or 'clip'")

