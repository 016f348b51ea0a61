"""Caption training: teacher forcing with label smoothing, early stopping on validation CIDEr-D.

Built from the pretraining trainer's parts (``tasks/pretrain``): its AdamW (fused where torch
has the kernel, no decay on biases/LayerNorm), warm-up + cosine schedule, bf16 autocast on
CUDA, atomic checkpoints with every RNG and the data position (so a resumed run reaches the
weights of an uninterrupted one: ``tests/test_caption.py``) and ``training_metrics`` rows.
One process (no DDP: a caption model trains in minutes on one GPU).

Optional BART-style denoising warm-up (``denoise_steps``): the first steps read the train
split's captions with spans masked (text infilling: 30 % of the words, span lengths ~
Poisson(3), each span one ``[MASK]``) through the encoder in text mode, and the decoder writes
them back whole; then captioning proper starts, with the same optimiser.

Every ``eval_every`` steps the validation clips are captioned greedily and scored (CIDEr-D
with the Python tokenizer: no JVM start per evaluation); the best weights are kept and written
to ``best/``; ``patience`` evaluations without a better CIDEr-D stop the run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_model, save_model

from models.caption_decoding import Decoding
from models.captioner import VideoCaptioner
from models.device import pick_device
from models.vocab import CLS, MASK, PAD, SEP
from tasks.caption.data import ClipSet, caption_ids, pad_rows, training_pairs
from tasks.caption.describe import describe
from tasks.caption.scores import caption_scores
from tasks.pretrain import checkpoint as ckpt
from tasks.pretrain.train import TrainConfig, autocast, make_optimizer, make_scheduler
from tasks.shared.progress import Progress

log = logging.getLogger("videobert.caption")


class CaptionTrainConfig(BaseModel):
    """Optimisation, validation and checkpoint settings of a caption training run."""

    steps: int = Field(1500, ge=1, description="Optimiser steps (denoising warm-up included)")
    batch_size: int = Field(32, ge=1, description="Clip-caption pairs per step")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (the decoder's)")
    warmup: int = Field(100, ge=0, description="Linear warm-up steps")
    encoder_lr_scale: float = Field(0.1, ge=0, description="The encoder's learning rate as a "
                                    "share of the decoder's (a warm-started encoder moved at "
                                    "the decoder's rate collapses: every clip looks alike)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay (matrices only)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing")
    eval_every: int = Field(100, ge=1, description="Validate (greedy CIDEr-D) every N steps")
    patience: int = Field(4, ge=1, description="Stop after N validations without gain")
    ckpt_every: int = Field(100, ge=1, description="Checkpoint every N steps")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept")
    denoise_steps: int = Field(0, ge=0, description="BART-style text-infilling warm-up steps")
    max_caption: int = Field(32, ge=2, description="WordPieces per caption")
    seed: int = Field(0, description="Seed of the batch order, masking and dropout")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")


class _Checkpointable:
    """``save_pretrained`` in the layout ``tasks.pretrain.checkpoint`` checks: one
    ``config.json`` and one ``model.safetensors`` (the decoder's tied weights stored once)."""

    def __init__(self, model: VideoCaptioner) -> None:
        self.model = model

    def save_pretrained(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"encoder": self.model.encoder.config.to_dict(),
               "decoder": self.model.decoder.config.to_dict(),
               "captioner": self.model.config.__dict__}
        (folder / "config.json").write_text(json.dumps(cfg, default=str), encoding="utf-8")
        save_model(self.model, str(folder / "model.safetensors"))


def infill(ids: list[int], rng: np.random.Generator, share: float = 0.3,
           mean_span: float = 3.0) -> list[int]:
    """BART's text infilling: spans (lengths ~ Poisson(mean_span)) covering ``share`` of the
    words (rounded), each span replaced by one ``[MASK]``."""
    n = len(ids)
    budget = int(round(share * n))
    masked = np.zeros(n, bool)
    for _ in range(100 * max(1, budget)):  # spans may overlap: draw until the budget is met
        left = budget - int(masked.sum())
        if left <= 0:
            break
        span = min(max(1, int(rng.poisson(mean_span))), left)
        start = int(rng.integers(0, n - span + 1))
        masked[start:start + span] = True
    out, i = [], 0
    while i < n:
        if masked[i]:
            out.append(MASK)
            while i < n and masked[i]:
                i += 1
        else:
            out.append(ids[i])
            i += 1
    return out


def _text_encoder_inputs(tokenizer: Any, texts: list[str], rng: np.random.Generator,
                         max_caption: int, device: torch.device) -> tuple[Any, ...]:
    enc = tokenizer(texts, add_special_tokens=False, truncation=True,
                    max_length=max_caption - 1)["input_ids"]
    ids = pad_rows([[CLS, *infill(e, rng), SEP] for e in enc])
    return ids.to(device), torch.zeros_like(ids).to(device), (ids != PAD).to(device), None


def _optimizer(model: VideoCaptioner, tc: TrainConfig, encoder_scale: float,
               device: torch.device) -> torch.optim.AdamW:
    """The pretraining trainer's AdamW (decay on matrices only; fused where torch has the
    kernel) over the whole captioner, the encoder's groups at ``encoder_scale`` of the rate."""
    opt = make_optimizer(model, tc, device)
    enc = {id(p) for p in model.encoder.parameters()}
    groups = []
    for g in opt.param_groups:
        for part, scale in ((False, 1.0), (True, encoder_scale)):
            params = [p for p in g["params"] if (id(p) in enc) == part]
            if params:
                groups.append({**{k: v for k, v in g.items() if k != "params"},
                               "params": params, "lr": tc.lr * scale,
                               "initial_lr": tc.lr * scale})
    return type(opt)(groups, lr=tc.lr, betas=tc.betas, eps=tc.eps,
                     **({"fused": True} if opt.defaults.get("fused") else {"foreach": True}))


def _order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def validate(model: VideoCaptioner, tokenizer: Any, val: ClipSet, cfg: CaptionTrainConfig,
             device: torch.device) -> dict[str, float]:
    """Greedy captions of the validation clips scored with CIDEr-D and BLEU-4 (RNG-neutral)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        caps = describe(model, tokenizer, val, Decoding(beams=1, max_len=cfg.max_caption),
                        device=device, progress=False)
    s = caption_scores({c: t for c, (t, _) in zip(val.clip_ids, caps, strict=True)},
                       dict(zip(val.clip_ids, val.refs, strict=True)), meteor=False, ptb=False)
    return {"cider": s["cider"], "bleu4": s["bleu4"], "rouge_l": s["rouge_l"]}


def train_captioner(model: VideoCaptioner, tokenizer: Any, train: ClipSet, val: ClipSet,
                    cfg: CaptionTrainConfig, run_dir: Path, *, resume: bool = False,
                    on_eval: Callable[[int, dict[str, float]], None] | None = None,
                    stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``model`` in place; on return it holds the best weights (also in ``best/``).

    Args:
        model: the captioner (train and val clips must carry references).
        tokenizer: the WordPiece tokenizer.
        train, val: captioned clips of the train and validation splits.
        cfg: settings.
        run_dir: the run folder (``checkpoints/``, ``best/``).
        resume: continue from the newest complete checkpoint under ``run_dir``.
        on_eval: called with (step, metrics) after each validation.
        stop_after: stop (as if killed) after this many steps; tests of exact resume.
        progress: show a progress bar.

    Returns:
        best_step, best (validation metrics), history, stopped_early, device, steps_done.
    """
    pairs = training_pairs(train)
    if not pairs or not any(val.refs):
        raise ValueError(f"caption training needs captioned clips in the train and val splits; "
                         f"got {len(pairs)} train captions and {sum(map(bool, val.refs))} "
                         "captioned val clips")
    device = pick_device(cfg.device)
    model.to(device)
    tc = TrainConfig(steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup,
                     weight_decay=cfg.weight_decay)
    opt = _optimizer(model, tc, cfg.encoder_lr_scale, device)
    sched = make_scheduler(opt, tc)
    root = run_dir / "checkpoints"
    st: dict[str, Any] = {"step": 0, "best": {"cider": -1.0, "step": 0}, "bad": 0,
                          "history": [], "train_loss": 0.0, "train_n": 0}
    torch.manual_seed(cfg.seed)
    if resume and (found := ckpt.latest_complete(root)) is not None:
        step0, folder = found
        load_model(model, str(folder / "model.safetensors"), device=str(device))
        state = ckpt.load_state(folder)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        st = json.loads(state["trainer"])
        log.info("caption training: resumed at step %d from %s", step0, folder)
    best_dir = run_dir / "best"
    if not best_dir.exists():
        model.save_pretrained(best_dir)
    wrapped = _Checkpointable(model)
    per_epoch = max(1, len(pairs) // cfg.batch_size)
    t0 = time.perf_counter()
    bar = Progress(progress)
    with bar.task("caption", cfg.steps - st["step"]) as tick:
        while st["step"] < cfg.steps:
            step = st["step"]
            epoch, pos = divmod(step, per_epoch)
            rows = _order(len(pairs), cfg.seed, epoch)[pos * cfg.batch_size:
                                                       (pos + 1) * cfg.batch_size]
            batch = [pairs[i] for i in rows]
            caps = caption_ids(tokenizer, [t for _, t in batch], cfg.max_caption).to(device)
            if step < cfg.denoise_steps:
                rng = np.random.default_rng([cfg.seed, 7, step])  # same masks after resume
                enc = _text_encoder_inputs(tokenizer, [t for _, t in batch], rng,
                                           cfg.max_caption, device)
            else:
                sub = train.subset(i for i, _ in batch)
                enc = model.encoder_inputs(sub.windows, sub.feats, device)
            model.train()
            with autocast(device):
                loss, _ = model.loss(enc, caps, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            st["step"] = step = step + 1
            st["train_loss"] += float(loss.detach())
            st["train_n"] += 1
            tick(1)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                m = validate(model, tokenizer, val, cfg, device)
                m["train_loss"] = st["train_loss"] / max(1, st["train_n"])
                st["train_loss"], st["train_n"] = 0.0, 0
                st["history"].append(m | {"step": step})
                if on_eval is not None:
                    on_eval(step, m)
                if step > cfg.denoise_steps and m["cider"] > st["best"]["cider"]:
                    st["best"], st["bad"] = m | {"step": step}, 0
                    model.save_pretrained(best_dir)
                elif step > cfg.denoise_steps:
                    st["bad"] += 1
            if step % cfg.ckpt_every == 0 or step == cfg.steps or st["bad"] >= cfg.patience:
                state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "rng": ckpt.rng_state(), "trainer": json.dumps(st)}
                saved = ckpt.save_checkpoint(root, step, wrapped, state)
                ckpt.prune(root, cfg.keep_last, protect=saved)
            if st["bad"] >= cfg.patience or (stop_after is not None and step >= stop_after):
                break
    best = VideoCaptioner.from_pretrained(best_dir, device=str(device))
    model.load_state_dict(best.state_dict())
    elapsed = time.perf_counter() - t0
    return {"best_step": int(st["best"]["step"]), "best": st["best"], "history": st["history"],
            "stopped_early": st["step"] < cfg.steps, "device": str(device),
            "steps_done": st["step"], "seconds": elapsed,
            "steps_per_s": (st["step"] / elapsed) if elapsed > 0 and math.isfinite(elapsed)
            else None}
