"""The zero-shot probe's wrong-video control (tasks/pretrain/probe.py: other_clips)."""

from __future__ import annotations

import numpy as np

from tasks.pretrain.probe import ProbeItem, other_clips


def _item(i: int, obj: str, motion: str) -> ProbeItem:
    return ProbeItem(f"c{i}", (i,), obj, motion, np.full(3, float(i), np.float32))


def test_each_clip_gets_another_clips_video_with_another_object_and_motion() -> None:
    items = [_item(0, "cat", "spins"), _item(1, "cat", "grows"), _item(2, "horse", "spins"),
             _item(3, "coin", "grows"), _item(4, "horse", "bounces")]
    swapped = other_clips(items)
    by_token = {it.tokens: it for it in items}
    for it, sw in zip(items, swapped, strict=True):
        src = by_token[sw.tokens]
        # the labels and the id stay the clip's own; the video (tokens and feature) is another's
        assert (sw.clip_id, sw.object, sw.motion) == (it.clip_id, it.object, it.motion)
        assert src.clip_id != it.clip_id and np.array_equal(sw.feature, src.feature)
        assert src.object != it.object and src.motion != it.motion
    # the first match going forward, cyclically: c0 (cat, spins) skips c1, c2 and takes c3
    assert swapped[0].tokens == (3,)


def test_without_a_fully_different_clip_one_differing_in_a_slot_is_taken() -> None:
    items = [_item(0, "cat", "spins"), _item(1, "cat", "grows")]
    swapped = other_clips(items)
    assert [s.tokens for s in swapped] == [(1,), (0,)]
    assert other_clips([_item(0, "cat", "spins")])[0].tokens == (0,)  # alone: itself
