"""Batched greedy and beam-search decoding for the captioner (``models/captioner.py``).

Many clips decode at once: beams are folded into the batch (B clips x W beams rows), the
decoder's key/value cache grows by one position per step and is reordered along the surviving
beams, and the encoder states are computed once per clip. The algorithm is the one of
``transformers``' ``generate`` (v5, vectorised beam search), so the two agree token for token
on the same weights (``tests/test_caption.py`` checks it):

- each step keeps the best ``2 W`` continuations over all beams; those ending in ``[SEP]`` (or
  reaching ``max_len``) among the first ``W`` become finished hypotheses scored
  ``sum log p / length ** length_penalty`` (length counts the generated tokens, ``[SEP]``
  included); the best ``W`` unfinished ones run on;
- it stops once no running beam can beat the worst finished one at its current length (the
  default ``early_stopping=False`` rule), or at ``max_len``;
- ``no_repeat_ngram`` bans any token that would repeat an n-gram of the hypothesis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from models.vocab import CLS, PAD, SEP

_NEG = -1.0e9


@dataclass(frozen=True)
class Decoding:
    """Decoding parameters (stored with every generated caption)."""

    beams: int = 4
    max_len: int = 32
    length_penalty: float = 1.0
    no_repeat_ngram: int = 3

    def __post_init__(self) -> None:
        if self.beams < 1 or self.max_len < 1 or self.no_repeat_ngram < 0:
            raise ValueError(f"invalid decoding parameters {self}")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return asdict(self)

    def hf_kwargs(self) -> dict[str, Any]:
        """The same settings as ``transformers`` ``generate`` keyword arguments."""
        return {"num_beams": self.beams, "max_new_tokens": self.max_len,
                "length_penalty": self.length_penalty, "early_stopping": False,
                "no_repeat_ngram_size": self.no_repeat_ngram, "do_sample": False,
                "bos_token_id": CLS, "eos_token_id": SEP, "pad_token_id": PAD,
                "decoder_start_token_id": CLS}


def _banned(seqs: list[list[int]], n: int) -> list[list[int]]:
    """Per hypothesis, tokens that would complete an n-gram it already holds."""
    out: list[list[int]] = []
    for s in seqs:
        if n <= 0 or len(s) + 1 < n:
            out.append([])
            continue
        prefix = tuple(s[len(s) - n + 1:]) if n > 1 else ()
        out.append([s[i + n - 1] for i in range(len(s) - n + 1)
                    if tuple(s[i:i + n - 1]) == prefix])
    return out


def _ban(logits: Tensor, seqs: Tensor, n: int) -> Tensor:
    """``logits`` (log-probabilities) with the banned tokens at -inf, in place (after the
    log-softmax, as ``transformers`` bans)."""
    if n <= 0 or seqs.shape[1] + 1 < n:
        return logits
    rows, cols = [], []
    for r, toks in enumerate(_banned(seqs.tolist(), n)):
        rows += [r] * len(toks)
        cols += toks
    if rows:
        logits[rows, cols] = float("-inf")
    return logits


def _step(decoder: Any, tokens: Tensor, memory: Tensor, mask: Tensor,
          cache: Any) -> tuple[Tensor, Any]:
    """One cached decoder step: (rows, V) log-probabilities (float) and the cache."""
    out = decoder(input_ids=tokens, encoder_hidden_states=memory, encoder_attention_mask=mask,
                  past_key_values=cache, use_cache=True)
    return F.log_softmax(out.logits[:, -1].float(), dim=-1), out.past_key_values


@torch.no_grad()
def generate(decoder: Any, memory: Tensor, mask: Tensor,
             dec: Decoding) -> tuple[list[list[int]], list[float]]:
    """Captions for a batch of encoded clips.

    Args:
        decoder: a ``BartForCausalLM`` (eval mode).
        memory: (B, T, D) encoder states. mask: (B, T) bool, False at padding.
        dec: decoding parameters (``beams`` 1 = greedy).

    Returns:
        Per clip, the WordPiece ids (no ``[CLS]``/``[SEP]``) and the score (beam: the length-
        penalised log-probability; greedy: the mean log-probability per token).
    """
    if dec.beams == 1:
        return _greedy(decoder, memory, mask, dec)
    return _beam(decoder, memory, mask, dec)


def _greedy(decoder: Any, memory: Tensor, mask: Tensor,
            dec: Decoding) -> tuple[list[list[int]], list[float]]:
    B = memory.shape[0]
    seqs = torch.full((B, 1), CLS, dtype=torch.long, device=memory.device)
    live = torch.ones(B, dtype=torch.bool, device=memory.device)
    total = torch.zeros(B, device=memory.device)
    length = torch.zeros(B, device=memory.device)
    cache = None
    for _ in range(dec.max_len):
        logp, cache = _step(decoder, seqs[:, -1:], memory, mask, cache)
        best, tok = _ban(logp, seqs, dec.no_repeat_ngram).max(-1)
        tok = torch.where(live, tok, torch.full_like(tok, PAD))
        total += torch.where(live, best, torch.zeros_like(best))
        length += live.float()
        seqs = torch.cat([seqs, tok[:, None]], dim=1)
        live &= tok != SEP
        if not live.any():
            break
    return _strip(seqs), (total / length.clamp(min=1)).tolist()


def _strip(seqs: Tensor) -> list[list[int]]:
    out = []
    for row in seqs.tolist():
        words = []
        for t in row[1:]:
            if t in (SEP, PAD):
                break
            words.append(t)
        out.append(words)
    return out


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    """Rows of the beam dimension: ``x`` (B, K, ...) at ``idx`` (B, J) -> (B, J, ...)."""
    shape = idx.shape + x.shape[2:]
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(shape))


def _beam(decoder: Any, memory: Tensor, mask: Tensor,
          dec: Decoding) -> tuple[list[list[int]], list[float]]:
    B, W, dev = memory.shape[0], dec.beams, memory.device
    total_len = 1 + dec.max_len
    out_seq = torch.full((B, total_len), PAD, dtype=torch.long, device=dev)
    out_score = torch.zeros(B, device=dev)
    ids = torch.arange(B, device=dev)  # the clips still decoding
    memory, mask = memory.repeat_interleave(W, 0), mask.repeat_interleave(W, 0)
    run_seq = torch.full((B, W, total_len), PAD, dtype=torch.long, device=dev)
    run_seq[:, :, 0] = CLS
    run_score = torch.zeros(B, W, device=dev)
    run_score[:, 1:] = _NEG
    fin_seq = run_seq.clone()
    fin_score = torch.full((B, W), _NEG, device=dev)
    fin_done = torch.zeros(B, W, dtype=torch.bool, device=dev)
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=dev)
    top_w = torch.arange(2 * W, device=dev) < W
    cache, cur = None, 1
    while True:
        flat = run_seq.view(B * W, total_len)[:, :cur]
        logp, cache = _step(decoder, flat[:, -1:], memory, mask, cache)
        logp = _ban(logp, flat, dec.no_repeat_ngram)
        # the best 2W continuations over all beams are among each beam's own best 2W: take
        # those first (no (B, W x V) sum, no top-k over it), then the best 2W of the W x 2W
        cand, cand_tok = logp.topk(2 * W, dim=1)  # (B*W, 2W)
        acc = (cand + run_score.view(B * W, 1)).view(B, W * 2 * W)
        top_score, top_idx = acc.topk(2 * W, dim=1)  # (B, 2W)
        src = top_idx // (2 * W)
        tok = cand_tok.view(B, W * 2 * W).gather(1, top_idx)
        top_seq = _gather(run_seq, src).clone()
        top_seq[:, :, cur] = tok
        hits = (tok == SEP) | (cur + 1 >= total_len)  # (B, 2W)
        # the best W unfinished continuations run on
        running = top_score + hits.float() * _NEG
        keep = running.topk(W, dim=1).indices
        run_seq, run_score = _gather(top_seq, keep), _gather(running, keep)
        rows = _gather(src, keep) + torch.arange(B, device=dev)[:, None] * W  # cache rows
        # finished ones (among the first W) compete with earlier finished hypotheses
        scored = top_score / (cur ** dec.length_penalty)
        scored = scored + (~can_improve).float() * _NEG + (~(hits & top_w)).float() * _NEG
        m_seq = torch.cat([fin_seq, top_seq], 1)
        m_score = torch.cat([fin_score, scored], 1)
        m_done = torch.cat([fin_done, hits & top_w], 1)
        best = m_score.topk(W, dim=1).indices
        fin_seq, fin_score, fin_done = _gather(m_seq, best), _gather(m_score, best), \
            _gather(m_done, best)
        cur += 1
        best_running = run_score[:, :1] / ((cur - 1) ** dec.length_penalty)
        worst = torch.where(fin_done, fin_score.min(1, keepdim=True).values,
                            torch.full_like(fin_score, _NEG))
        can_improve = can_improve & (best_running > worst).any(-1, keepdim=True)
        # a clip is settled when no running beam can beat its finished ones (or all hit the
        # end): its result is final (transformers keeps computing it; nothing can change it),
        # so it leaves the batch and the decoder stops spending work on its rows
        done = ~can_improve[:, 0] | hits.all(1)
        out_seq[ids[done]], out_score[ids[done]] = fin_seq[done, 0], fin_score[done, 0]
        if bool(done.all()):
            break
        if bool(done.any()):
            live = ~done
            ids, run_seq, run_score = ids[live], run_seq[live], run_score[live]
            fin_seq, fin_score, fin_done = fin_seq[live], fin_score[live], fin_done[live]
            can_improve, rows = can_improve[live], rows[live]
            beam_rows = (torch.nonzero(live)[:, 0, None] * W
                         + torch.arange(W, device=dev)).view(-1)
            memory, mask = memory[beam_rows], mask[beam_rows]
            B = int(live.sum())
        cache.reorder_cache(rows.view(-1))
    return _strip(out_seq), out_score.tolist()


@torch.no_grad()
def hf_generate(decoder: Any, memory: Tensor, mask: Tensor, dec: Decoding, *,
                use_cache: bool = False) -> list[list[int]]:
    """The same captions through ``transformers``' ``generate`` (the reference of the tests,
    and a baseline of ``bench/caption.py``).

    ``use_cache`` is off by default: in transformers 5.23 ``generate`` on a ``BartForCausalLM``
    given ``encoder_hidden_states`` keeps a self-attention-only cache, and its logits drift from
    the uncached forward pass after two steps (measured: greedy picks a different token at step
    6 on a random tiny model); uncached, every step is the exact forward pass, which is what
    :func:`generate` (cached, with an encoder-decoder cache) reproduces.
    """
    start = torch.full((memory.shape[0], 1), CLS, dtype=torch.long, device=memory.device)
    out = decoder.generate(input_ids=start, encoder_hidden_states=memory,
                           encoder_attention_mask=mask, use_cache=use_cache, **dec.hf_kwargs())
    return _strip(out)
