"""CLIP as a frozen, text-aligned clip encoder (the strong baseline next to VideoBERT).

A clip's embedding is the mean of its L2-normalised frame embeddings, L2-normalised again: the
usual "mean-pooled CLIP" video baseline (as in CLIP4Clip's parameter-free variant). Queries go
through CLIP's text tower, so clips and queries share one space and retrieval is a dot product.

Weights never ship with a package (see shared/offline-assets.md): ``ClipEncoder.from_pretrained``
takes a hub id (needs a network) or a local folder written with ``save_pretrained``, and fails
with ``ClipUnavailable`` saying how to provide one. Images are preprocessed in torch (no
torchvision, no PIL) on the encoder's device: resize the short side (bicubic, antialiased),
center crop, CLIP mean/std read from the checkpoint's ``preprocessor_config.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hf_constants
from transformers import AutoTokenizer, CLIPModel, PreTrainedTokenizerBase
from transformers.image_processing_base import ImageProcessingMixin
from transformers.utils import cached_file, has_file

from models.device import pick_device

# OpenAI CLIP's normalisation, used when a checkpoint carries no preprocessor config.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
HOW_TO = (
    "Provide CLIP weights as a local folder written with save_pretrained, e.g. on a machine "
    "with network access: `m = 'openai/clip-vit-base-patch32'; "
    "CLIPModel.from_pretrained(m).save_pretrained(DIR); "
    "CLIPProcessor.from_pretrained(m).save_pretrained(DIR)` (model, tokenizer and "
    "preprocessor_config.json), then copy DIR here and pass its path; or pass a hub id "
    "from a machine that reaches the Hugging Face Hub (HF_HUB_OFFLINE unset)."
)


class ClipUnavailable(RuntimeError):
    """CLIP weights could not be found or loaded; the message says how to provide them."""


def _looks_local(name_or_path: str) -> bool:
    """True for strings that can only be paths (hub ids are ``name`` or ``org/name``)."""
    return (os.path.isabs(name_or_path) or name_or_path.startswith((".", "~"))
            or name_or_path.count("/") > 1 or os.path.exists(name_or_path))


def _local_problem(root: Path) -> str | None:
    """What keeps a local folder from loading as CLIP, or None when it looks complete."""
    if not root.is_dir():
        return "does not exist"
    if not (root / "config.json").is_file():
        return "has no config.json"
    kind = json.loads((root / "config.json").read_text()).get("model_type")
    if kind != "clip":
        return f"holds a {kind!r} model, not CLIP"
    if not any((root / f).is_file() for f in WEIGHT_FILES):
        return f"has no weights file ({', '.join(WEIGHT_FILES)})"
    if not any((root / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        return "has no tokenizer (tokenizer.json or vocab.json)"
    return None


def available(name_or_path: str | None) -> tuple[bool, str]:
    """Say whether CLIP weights can be loaded from ``name_or_path``, without loading them.

    A local folder must hold a CLIP ``config.json``, a weights file and tokenizer files. A hub
    id must resolve its config (from the cache, or the Hub when online) and list a weights file.

    Args:
        name_or_path: a local folder, a hub id, or None (no model configured).

    Returns:
        (True, where the weights come from) or (False, why not and how to fix it).
    """
    if not name_or_path:
        return False, f"no CLIP model configured. {HOW_TO}"
    if _looks_local(name_or_path):
        root = Path(name_or_path).expanduser()
        problem = _local_problem(root)
        if problem:
            return False, f"CLIP folder {str(root)!r} {problem}. {HOW_TO}"
        return True, f"local CLIP folder {str(root)!r}"
    try:
        cached_file(name_or_path, "config.json")
        has_weights = any(has_file(name_or_path, f) for f in WEIGHT_FILES)
    except Exception as e:  # any hub or cache failure means "not available", with the reason
        why = f"cannot resolve CLIP hub id {name_or_path!r} ({_offline_hint()}): {e}"
        return False, f"{why.rstrip('.')}. {HOW_TO}"
    if not has_weights:
        why = f"hub id {name_or_path!r} has no reachable weights ({_offline_hint()})"
        return False, f"{why}. {HOW_TO}"
    return True, f"hub id {name_or_path!r}"


def _offline_hint() -> str:
    return "offline: HF_HUB_OFFLINE is set" if hf_constants.is_offline_mode() else "online"


@dataclass(frozen=True)
class ImagePreprocess:
    """CLIP's image pipeline: short side -> ``resize`` (bicubic), center crop ``crop``, mean/std."""

    resize: int
    crop: int
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    @classmethod
    def from_pretrained(cls, name_or_path: str, image_size: int) -> ImagePreprocess:
        """Read ``preprocessor_config.json`` when the checkpoint has one, else CLIP defaults."""
        try:
            cfg, _ = ImageProcessingMixin.get_image_processor_dict(name_or_path)
        except OSError:
            cfg = {}
        size = cfg.get("size") or {}
        resize = size.get("shortest_edge", image_size) if isinstance(size, dict) else int(size)
        mean = tuple(cfg.get("image_mean") or OPENAI_CLIP_MEAN)
        std = tuple(cfg.get("image_std") or OPENAI_CLIP_STD)
        # The crop must match the position embeddings of the vision tower.
        return cls(resize=max(int(resize), image_size), crop=image_size, mean=mean, std=std)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, crop, crop) float32, normalised."""
        x = frames.permute(0, 3, 1, 2).float()  # (N, 3, H, W) in [0, 255]
        h, w = x.shape[-2:]
        short, long_ = min(h, w), max(h, w)
        new_long = int(self.resize * long_ / short)  # as transformers' CLIPImageProcessor
        size = (self.resize, new_long) if h <= w else (new_long, self.resize)
        if (h, w) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp(0.0, 255.0)  # bicubic overshoots; PIL would clip to uint8
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        x = x[:, :, top:top + self.crop, left:left + self.crop] / 255.0  # (N, 3, S, S)
        mean = x.new_tensor(self.mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


class ClipEncoder:
    """Frozen CLIP: clips (frames) and texts -> L2-normalised vectors in one space.

    Args:
        model: a ``CLIPModel`` (put in eval mode and moved to ``device``).
        tokenizer: its tokenizer.
        preprocess: the image pipeline.
        name: the model's name (hub id or folder name), for ``version``.
        device: where to run; None picks CUDA when present. bf16 autocast on CUDA.
        batch_size: frames or texts per forward pass.
    """

    def __init__(self, model: CLIPModel, tokenizer: PreTrainedTokenizerBase,
                 preprocess: ImagePreprocess, name: str,
                 device: str | torch.device | None = None, batch_size: int = 64) -> None:
        self.device = pick_device(device)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name
        self.batch_size = batch_size
        self.max_length = min(tokenizer.model_max_length,
                              model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | torch.device | None = None,
                        batch_size: int = 64) -> ClipEncoder:
        """Load CLIP from a local ``save_pretrained`` folder or a hub id.

        Args:
            name_or_path: a folder with config, weights, tokenizer (and preprocessor config),
                or a hub id such as ``openai/clip-vit-base-patch32`` (needs a network once).
            device: where to run; None picks CUDA when present.
            batch_size: frames or texts per forward pass.

        Returns:
            The encoder.

        Raises:
            ClipUnavailable: the weights cannot be found or loaded (the message says how).
        """
        if _looks_local(name_or_path):
            name_or_path = str(Path(name_or_path).expanduser())
        ok, why = available(name_or_path)
        if not ok:
            raise ClipUnavailable(why)
        try:
            model = CLIPModel.from_pretrained(name_or_path, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            why = f"cannot load CLIP from {name_or_path!r}: {e}"
            raise ClipUnavailable(f"{why.rstrip('.')}. {HOW_TO}") from e
        image_size = model.config.vision_config.image_size
        preprocess = ImagePreprocess.from_pretrained(name_or_path, image_size)
        name = Path(name_or_path).name if _looks_local(name_or_path) else name_or_path
        return cls(model, tokenizer, preprocess, name, device=device, batch_size=batch_size)

    @property
    def dim(self) -> int:
        """Embedding size (the projection dimension)."""
        return int(self.model.config.projection_dim)

    @property
    def version(self) -> str:
        """Provenance: model name + a hash of its config (and the preprocessing)."""
        cfg = self.model.config.to_dict()
        for volatile in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
            cfg.pop(volatile, None)
        blob = json.dumps([cfg, vars(self.preprocess)], sort_keys=True, default=str)
        return f"clip:{self.name}@{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    @torch.inference_mode()
    def _batched(self, n: int, forward: Callable[[slice], object]) -> np.ndarray:
        """Run ``forward`` on batches of rows (bf16 autocast on CUDA); L2-normalised, on CPU."""
        out = [torch.zeros(0, self.dim)]
        for i in range(0, n, self.batch_size):
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                emb = forward(slice(i, i + self.batch_size))
            # get_*_features: a tensor in transformers 4, a pooled output in 5.
            emb = emb if isinstance(emb, torch.Tensor) else emb.pooler_output  # (n, D)
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(out).numpy()

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """Embed single frames.

        Args:
            frames: (N, H, W, 3) uint8 RGB.

        Returns:
            (N, D) float32, each row L2-normalised.
        """
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
        frames_t = torch.from_numpy(np.ascontiguousarray(frames))  # (N, H, W, 3) on the CPU

        def forward(rows: slice) -> torch.Tensor:
            pixels = self.preprocess(frames_t[rows].to(self.device))  # (n, 3, S, S)
            return self.model.get_image_features(pixel_values=pixels)

        return self._batched(len(frames), forward)

    def encode_clips(self, frames: np.ndarray) -> np.ndarray:
        """Embed clips: mean of the L2-normalised frame embeddings, L2-normalised.

        Args:
            frames: (B, T, H, W, 3) uint8 RGB, T frames sampled from each clip.

        Returns:
            (B, D) float32, each row L2-normalised.
        """
        if frames.ndim != 5:
            raise ValueError(f"expected (B, T, H, W, 3) uint8 clips, got shape {frames.shape}")
        b, t = frames.shape[:2]
        per_frame = self.encode_frames(frames.reshape(b * t, *frames.shape[2:]))  # (B*T, D)
        mean = per_frame.reshape(b, t, self.dim).mean(axis=1)  # (B, D)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries with CLIP's text tower.

        Args:
            texts: the queries (truncated to the model's context length).

        Returns:
            (N, D) float32, each row L2-normalised.
        """
        def forward(rows: slice) -> torch.Tensor:
            tok = self.tokenizer(list(texts[rows]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            return self.model.get_text_features(input_ids=tok["input_ids"],
                                                attention_mask=tok["attention_mask"])

        return self._batched(len(texts), forward)
