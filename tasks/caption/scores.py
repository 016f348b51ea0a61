"""Caption scores with the COCO caption evaluation code (pycocoevalcap), and slot accuracy.

BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D are pycocoevalcap's own scorers, over captions
tokenised by its PTB tokenizer (Stanford CoreNLP); both the tokenizer and METEOR run on Java.
Without a ``java`` on PATH, METEOR is left out (None, the report says why) and the tokenizer
falls back to the same rule in Python (lower case, PTB punctuation removed, split on spaces).
BLEU, METEOR and ROUGE-L are reported in percent, CIDEr-D as it is (the paper's YouCook II
row: BLEU-4 4.33, METEOR 11.94, ROUGE-L 28.80, CIDEr 0.55).

Slot accuracy: for captions from a known grammar (the synthetic corpus), the share of clips
whose caption names the reference's object (motion; both) - the compositional test.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

_PUNCT = re.compile(r"[\"'`.,;:!?()\[\]{}\-]+")


def java_available() -> bool:
    """Whether METEOR and the PTB tokenizer can run."""
    return shutil.which("java") is not None


def _simple_tokenize(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    return {k: [" ".join(_PUNCT.sub(" ", c.lower()).split()) for c in v]
            for k, v in captions.items()}


def _tokenize(captions: Mapping[str, Sequence[str]], ptb: bool) -> dict[str, list[str]]:
    if not (ptb and java_available()):
        return _simple_tokenize(captions)
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def caption_scores(hyps: Mapping[str, str], refs: Mapping[str, Sequence[str]], *,
                   meteor: bool = True, ptb: bool = True) -> dict[str, Any]:
    """Corpus scores of one caption per item against its references.

    Args:
        hyps: item id -> generated caption.
        refs: item id -> reference captions (at least one each).
        meteor: compute METEOR when Java is present.
        ptb: tokenise with the PTB tokenizer when Java is present (else, and when False, the
            Python rule; validation during training uses it: no JVM start per evaluation).

    Returns:
        ``bleu1``..``bleu4``, ``meteor`` (None without Java), ``rouge_l`` (percent), ``cider``
        (CIDEr-D), ``n`` (items) and ``tokenizer`` (``ptb`` or ``python``).

    Raises:
        ValueError: an item without references, or ids that differ.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(hyps) != set(refs):
        raise ValueError("hypotheses and references cover different items")
    if not hyps:
        raise ValueError("nothing to score: no captioned item")
    if any(not refs[k] for k in refs):
        raise ValueError("an item has no reference caption")
    keys = sorted(hyps)
    gts = _tokenize({k: list(refs[k]) for k in keys}, ptb)
    res = _tokenize({k: [hyps[k]] for k in keys}, ptb)
    res = {k: [v[0] if v[0].strip() else "<empty>"] for k, v in res.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out: dict[str, Any] = {f"bleu{i + 1}": 100 * float(b) for i, b in enumerate(bleu)}
    out |= {"meteor": None, "rouge_l": 100 * float(rouge), "cider": float(cider),
            "n": len(keys), "tokenizer": "ptb" if ptb and java_available() else "python"}
    if meteor and java_available():
        from pycocoevalcap.meteor.meteor import Meteor

        out["meteor"] = 100 * float(Meteor().compute_score(gts, res)[0])
    return out


def find_slot(text: str, phrases: Mapping[str, Sequence[str]]) -> str | None:
    """The slot value whose phrase occurs in ``text`` (longest phrase first), else None."""
    t = f" {' '.join(_PUNCT.sub(' ', text.lower()).split())} "
    best: tuple[int, str] | None = None
    for name, ps in phrases.items():
        for p in ps:
            if f" {p} " in t and (best is None or len(p) > best[0]):
                best = (len(p), name)
    return None if best is None else best[1]


def slot_accuracy(hyps: Sequence[str], refs: Sequence[Sequence[str]],
                  slots: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, float]:
    """Per slot (and all slots at once), the percent of items whose caption names the value its
    reference names; items whose reference names no value of a slot are left out of it."""
    out: dict[str, float] = {}
    hits_all, n_all = 0, 0
    for i, h in enumerate(hyps):
        ok_all, counted = True, False
        for slot, phrases in slots.items():
            truth = next((v for r in refs[i] if (v := find_slot(r, phrases))), None)
            if truth is None:
                continue
            counted = True
            ok = find_slot(h, phrases) == truth
            ok_all &= ok
            out[f"{slot}_hits"] = out.get(f"{slot}_hits", 0) + ok
            out[f"{slot}_n"] = out.get(f"{slot}_n", 0) + 1
        if counted:
            hits_all += ok_all
            n_all += 1
    acc = {f"{s}_acc": 100 * out[f"{s}_hits"] / out[f"{s}_n"] for s in slots if f"{s}_n" in out}
    if n_all:
        acc["all_acc"] = 100 * hits_all / n_all
    return acc
