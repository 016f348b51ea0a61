"""Clip captioning: the VideoBERT encoder and a BART decoder (``BartForCausalLM``) reading it.

Why BART's decoder rather than ``EncoderDecoderModel`` with a BERT decoder: both are post-LN
transformers with cross-attention, but BART is the encoder-decoder the paper's second use maps
onto (a bidirectional encoder, here VideoBERT, with an autoregressive decoder), and
``BartForCausalLM`` takes the encoder's states as ``encoder_hidden_states``, so our encoder
(which is not a Hugging Face model) plugs in without a wrapper, and ``generate`` runs on the very
same weights (the reference the beam search in ``models/caption_decoding.py`` is checked
against).

The decoder's vocabulary is VideoBERT's text vocabulary (BERT's 30522 uncased WordPieces;
``[CLS]`` starts a caption, ``[SEP]`` ends it, ``[PAD]`` pads). It starts from VideoBERT's text
tower where shapes allow (:func:`decoder_from_text_tower`): word embeddings (tied to the output
layer), positions (plus the text token-type row, which BART has no table for: the sum is the
same), the embedding LayerNorm, and per layer self-attention (q, k, v split from the fused
projection), its output and LayerNorm, and the feed-forward block. Cross-attention is new.

Encoder input per clip: ``[CLS] [>] v_{k-c} .. v_k .. v_{k+c} [SEP]`` (``context`` c clips each
side, padding where the video has none, so the clip described is always at position ``2 + c``)
with each clip's I3D feature added to its visual token (``VideoBert.enable_feature_input``).
With ``feature_memory`` the decoder also attends to each clip's raw feature, projected (the
paper's best captioning row, VideoBERT + S3D, feeds both). The ``features`` mode is the
paper's baseline without VideoBERT (S3D there, I3D here): a fresh,
randomly initialised encoder of the same size that sees the features only (every visual token
replaced by ``[MASK]``), and a randomly initialised decoder.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from models.concepts import quiet_loading
from models.videobert import VideoBert, build_model
from models.vocab import CLS, MASK, PAD, SEP, TEXT_VOCAB, VSEP, visual_id
from warehouse.atomic import fsync_dir, tmp_path_for

CAPTIONER_JSON = "captioner.json"
HEADS = "heads.safetensors"
BOS, EOS = CLS, SEP
"""A caption is ``[CLS] words [SEP]``: ``[CLS]`` is the decoder's start token, ``[SEP]`` its end."""


@dataclass(kw_only=True)
class CaptionerConfig:
    """What a captioner is besides its two halves' own configs (saved as ``captioner.json``).

    Attributes:
        mode: ``videobert`` (encoder = pretrained VideoBERT, decoder from its text tower) or
            ``features`` (the baseline: random encoder reading the clip features only, random
            decoder).
        context: neighbouring clips each side in the encoder input.
        max_caption: WordPieces a caption is cut to in training and generation (after ``[CLS]``).
        label_smoothing: training's label smoothing.
        parent_run: the model run the encoder came from (None for the baseline).
        feature_encoder: clip features the encoder reads (``clip_features.encoder``) or None.
        feature_memory: the decoder also attends to each window clip's raw feature, projected
            (``Linear`` + LayerNorm), beside VideoBERT's states: the paper's best captioning
            row feeds VideoBERT's features *and* the S3D features to the decoder.
    """

    mode: str = "videobert"
    context: int = 0
    max_caption: int = 32
    label_smoothing: float = 0.1
    parent_run: str | None = None
    feature_encoder: str | None = None
    feature_memory: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("videobert", "features"):
            raise ValueError(f"mode {self.mode!r}: 'videobert' or 'features'")
        if self.context < 0 or self.max_caption < 2:
            raise ValueError("context must be >= 0 and max_caption >= 2")


def bart_decoder_config(encoder: VideoBert, layers: int | None = None) -> Any:
    """A ``BartConfig`` for a causal decoder of the encoder's width over the text vocabulary."""
    from transformers import BartConfig

    c = encoder.config
    return BartConfig(
        vocab_size=TEXT_VOCAB, d_model=c.hidden, decoder_layers=layers or c.layers,
        decoder_attention_heads=c.heads, decoder_ffn_dim=c.intermediate, encoder_layers=0,
        encoder_attention_heads=c.heads, encoder_ffn_dim=c.intermediate,
        max_position_embeddings=c.max_position, activation_function="gelu",
        dropout=c.dropout, attention_dropout=c.dropout, activation_dropout=0.0,
        scale_embedding=False, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        decoder_start_token_id=BOS, forced_bos_token_id=None, forced_eos_token_id=None,
        is_decoder=True, add_cross_attention=True, is_encoder_decoder=False,
        tie_word_embeddings=True, use_cache=True)


@torch.no_grad()
def decoder_from_text_tower(decoder: Any, encoder: VideoBert) -> list[str]:
    """Copy VideoBERT's text tower into a ``BartForCausalLM`` where shapes allow.

    Returns:
        The decoder parameters copied (the rest, cross-attention above all, keep their init).
    """
    d, e = decoder.model.decoder, encoder
    copied: list[str] = []

    def put(dst: Tensor, src: Tensor, name: str) -> None:
        if dst.shape == src.shape:
            dst.copy_(src)
            copied.append(name)

    put(d.embed_tokens.weight, e.embeddings.word.weight[:TEXT_VOCAB], "embed_tokens")
    n = min(d.embed_positions.weight.shape[0] - 2, e.embeddings.position.weight.shape[0])
    d.embed_positions.weight[2:2 + n] = (e.embeddings.position.weight[:n]
                                         + e.embeddings.token_type.weight[0])
    copied.append("embed_positions")
    put(d.layernorm_embedding.weight, e.embeddings.norm.weight, "layernorm_embedding.weight")
    put(d.layernorm_embedding.bias, e.embeddings.norm.bias, "layernorm_embedding.bias")
    for i, (dl, el) in enumerate(zip(d.layers, e.layers, strict=False)):
        q, k, v = el.attn.qkv.weight.chunk(3, dim=0)
        qb, kb, vb = el.attn.qkv.bias.chunk(3, dim=0)
        sa = dl.self_attn
        for lin, w, b, nm in ((sa.q_proj, q, qb, "q"), (sa.k_proj, k, kb, "k"),
                              (sa.v_proj, v, vb, "v"), (sa.out_proj, el.attn.out.weight,
                                                        el.attn.out.bias, "out")):
            put(lin.weight, w, f"layers.{i}.self_attn.{nm}.weight")
            put(lin.bias, b, f"layers.{i}.self_attn.{nm}.bias")
        for dst, src, nm in ((dl.self_attn_layer_norm, el.attn_norm, "self_attn_layer_norm"),
                             (dl.fc1, el.ffn_in, "fc1"), (dl.fc2, el.ffn_out, "fc2"),
                             (dl.final_layer_norm, el.ffn_norm, "final_layer_norm")):
            put(dst.weight, src.weight, f"layers.{i}.{nm}.weight")
            put(dst.bias, src.bias, f"layers.{i}.{nm}.bias")
    return copied


class VideoCaptioner(nn.Module):
    """VideoBERT encoder + BART decoder; :meth:`loss` trains it, ``models/caption_decoding.py``
    generates with it."""

    def __init__(self, encoder: VideoBert, decoder: Any, config: CaptionerConfig) -> None:
        super().__init__()
        self.encoder, self.decoder, self.config = encoder, decoder, config
        self.feature_proj: nn.Sequential | None = None
        c = encoder.config
        if config.feature_memory and c.feature_input:
            self.feature_proj = nn.Sequential(nn.Linear(c.feature_dim, c.hidden),
                                              nn.LayerNorm(c.hidden, eps=c.layer_norm_eps))
            self.feature_proj.to(encoder.embeddings.word.weight.device)

    # -- building
    @classmethod
    def from_videobert(cls, encoder: VideoBert, config: CaptionerConfig, *,
                       feature_dim: int = 0, decoder_layers: int | None = None,
                       seed: int = 0) -> VideoCaptioner:
        """A captioner around a pretrained (or fine-tuned) VideoBERT.

        Args:
            encoder: the VideoBERT; its feature input is turned on when ``feature_dim`` > 0.
            config: ``mode`` must be ``videobert``.
            feature_dim: width of the clip features (0: tokens only).
            decoder_layers: decoder depth (default: the encoder's).
            seed: seed of the new weights (cross-attention).
        """
        from transformers import BartForCausalLM

        if feature_dim and config.feature_encoder:
            encoder.enable_feature_input(feature_dim, config.feature_encoder)
        torch.manual_seed(seed)
        decoder = BartForCausalLM(bart_decoder_config(encoder, decoder_layers))
        decoder_from_text_tower(decoder, encoder)
        decoder.tie_weights()
        return cls(encoder, decoder.to(encoder.embeddings.word.weight.device), config)

    @classmethod
    def features_baseline(cls, preset: str, n_visual: int, feature_dim: int,
                          config: CaptionerConfig, *, seed: int = 0) -> VideoCaptioner:
        """The baseline without VideoBERT: random encoder and decoder, clip features in."""
        from transformers import BartForCausalLM

        if feature_dim <= 0 or not config.feature_encoder:
            raise ValueError("the features baseline needs clip features")
        torch.manual_seed(seed)
        encoder = build_model(preset, n_visual, feature_dim=feature_dim, init_from=None)
        encoder.enable_feature_input(feature_dim, config.feature_encoder)
        nn.init.normal_(encoder.feature_in.weight, std=0.02)  # type: ignore[union-attr]
        decoder = BartForCausalLM(bart_decoder_config(encoder))
        return cls(encoder, decoder, config)

    # -- inputs
    def encoder_inputs(self, windows: Sequence[Sequence[int | None]],
                       feats: Sequence[Sequence[np.ndarray | None]] | None,
                       device: torch.device | str) -> tuple[Tensor, Tensor, Tensor,
                                                            Tensor | None]:
        """Encoder ids, token types, mask and features for clip windows.

        Args:
            windows: per clip, ``2 * context + 1`` visual tokens (None where the video has no
                clip there).
            feats: per clip, the same windows' features (None where missing), or None.

        Returns:
            (B, T) ids, (B, T) token types, (B, T) bool mask, (B, T, F) features or None.
        """
        width = max(len(w) for w in windows) + 3
        ids = torch.full((len(windows), width), PAD, dtype=torch.long)
        ids[:, 0], ids[:, 1] = CLS, VSEP
        for i, w in enumerate(windows):
            for k, t in enumerate(w):
                if t is not None:
                    ids[i, 2 + k] = MASK if self.config.mode == "features" else visual_id(t)
            ids[i, 2 + len(w)] = SEP
        types = torch.ones_like(ids)
        types[:, 0] = 0
        mask = ids != PAD
        f = None
        cfg = self.encoder.config
        if feats is not None and cfg.feature_input:
            arr = np.zeros((len(windows), width, cfg.feature_dim), np.float32)
            for i, fw in enumerate(feats):
                for k, v in enumerate(fw):
                    if v is not None:
                        arr[i, 2 + k] = v
            f = torch.from_numpy(arr).to(device)
        return ids.to(device), types.to(device), mask.to(device), f

    def encode(self, ids: Tensor, types: Tensor, mask: Tensor,
               feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """What the decoder attends to: (B, M, D) states and their (B, M) mask.

        VideoBERT's states of every input position, then (``feature_memory``) one projected
        raw feature per window clip."""
        h = self.encoder.encode(ids, types, mask, feats)  # (B, T, D)
        if self.feature_proj is None or feats is None:
            return h, mask
        w = ids.shape[1] - 3  # window positions 2 .. 2 + w
        extra = self.feature_proj(feats[:, 2:2 + w].to(h.dtype))  # (B, w, D)
        return torch.cat([h, extra], 1), torch.cat([mask, mask[:, 2:2 + w]], 1)

    # -- training
    def loss(self, enc: tuple[Tensor, Tensor, Tensor, Tensor | None], captions: Tensor,
             label_smoothing: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced cross-entropy of ``[CLS] words [SEP]`` captions.

        Args:
            enc: :meth:`encoder_inputs`' output.
            captions: (B, L) ids ``[CLS] words [SEP]`` padded with ``[PAD]``.
            label_smoothing: overrides the config's.

        Returns:
            The loss and detached counts: ``n_tokens``, ``correct_tokens``, ``nll`` (unsmoothed).
        """
        ids, types, mask, feats = enc
        memory, mem_mask = self.encode(ids, types, mask, feats)
        inp, target = captions[:, :-1], captions[:, 1:].clone()
        target[target == PAD] = -100
        out = self.decoder(input_ids=inp, attention_mask=inp != PAD,
                           encoder_hidden_states=memory, encoder_attention_mask=mem_mask,
                           use_cache=False)
        logits = out.logits.float().reshape(-1, out.logits.shape[-1])
        flat = target.reshape(-1)
        ls = self.config.label_smoothing if label_smoothing is None else label_smoothing
        loss = F.cross_entropy(logits, flat, ignore_index=-100, label_smoothing=ls)
        with torch.no_grad():
            keep = flat != -100
            nll = F.cross_entropy(logits[keep], flat[keep]) if keep.any() else loss.detach()
            correct = (logits[keep].argmax(-1) == flat[keep]).sum()
        return loss, {"n_tokens": keep.sum(), "correct_tokens": correct, "nll": nll.detach()}

    # -- checkpoints
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``encoder/``, ``decoder/`` and ``captioner.json`` into a temporary folder and
        rename it into place (an existing one is moved aside first, removed after)."""
        dest = Path(directory)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path_for(dest)
        tmp.mkdir()
        try:
            self.encoder.save_pretrained(tmp / "encoder")
            with quiet_loading():
                self.decoder.save_pretrained(tmp / "decoder")
            if self.feature_proj is not None:
                save_file({k: v.contiguous() for k, v in self.feature_proj.state_dict().items()},
                          str(tmp / HEADS))
            (tmp / CAPTIONER_JSON).write_text(json.dumps(asdict(self.config), indent=2),
                                              encoding="utf-8")
            fsync_dir(tmp)
            old = None
            if dest.exists():
                old = dest.with_name(f".old-{dest.name}-{uuid.uuid4().hex[:8]}")
                dest.rename(old)
            tmp.rename(dest)
            fsync_dir(dest.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str],
                        device: str | torch.device = "cpu") -> VideoCaptioner:
        """Load :meth:`save_pretrained`'s folder (eval mode).

        Raises:
            FileNotFoundError / ValueError: a missing or invalid part (named in the message).
        """
        from transformers import BartForCausalLM

        src = Path(directory)
        cfg_path = src / CAPTIONER_JSON
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{src} is not a captioner checkpoint (no {CAPTIONER_JSON})")
        try:
            config = CaptionerConfig(**json.loads(cfg_path.read_text(encoding="utf-8")))
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid {cfg_path}: {e}") from e
        encoder = VideoBert.from_pretrained(src / "encoder", device=device)
        with quiet_loading():
            decoder = BartForCausalLM.from_pretrained(str(src / "decoder")).to(device)
        model = cls(encoder, decoder, config)
        if model.feature_proj is not None:
            if not (src / HEADS).is_file():
                raise FileNotFoundError(f"{src} has no {HEADS} (the raw-feature projection)")
            model.feature_proj.load_state_dict(load_file(str(src / HEADS), device=str(device)))
        return model.eval()
