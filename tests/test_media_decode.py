"""tasks.shared.media.decode_frames against real ffmpeg: what comes out, not whether input is bad.

VFR sampled by timestamp, rotation, 10-bit to uint8, output sizes and crops, frame counts
and windows, decode failure, weird file names. The session fixtures ``mdir`` and ``good``
come from tests/test_media.py; media is made with tests/media_factory.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.shared import media
from tasks.shared.errors import IngestError
from tests import media_factory as mf
from tests import test_media
from tests.test_media import _code

# The session fixtures of tests/test_media.py, bound here so pytest finds them (assigned,
# not imported by name: the test arguments of the same name would shadow an import).
mdir = test_media.mdir
good = test_media.good


@pytest.fixture(scope="session")
def vfr_clips(mdir: Path) -> dict[str, mf.VfrClip]:
    return {codec: mf.vfr_video(mdir / f"vfr_{codec}.mkv", codec=codec)
            for codec in ("ffv1", "libx264")}


def _grey_index(frames: np.ndarray, clip: mf.VfrClip) -> list[int]:
    rgb = (np.array(clip.levels) - 16) * 255 / 219  # limited-range luma -> full-range RGB
    return [int(np.argmin(np.abs(rgb - f.mean()))) for f in frames]


@pytest.mark.parametrize("codec", ["ffv1", "libx264"])
@pytest.mark.parametrize("start,end,fps", [(0, None, 10), (0.12, 2.0, 10), (0.52, 1.9, 3),
                                           (1.0, None, 20), (0.3, None, 1), (1.22, 2.2, 7)])
def test_vfr_sampled_by_timestamp(vfr_clips, codec: str, start: float, end: float | None,
                                  fps: float) -> None:
    clip = vfr_clips[codec]
    frames, stamps = media.decode_frames(clip.path, start, end, fps, (64, 48))
    assert np.allclose(stamps, start + np.arange(len(frames)) / fps)
    want = [clip.levels.index(clip.level_at(t)) for t in stamps]
    assert _grey_index(frames, clip) == want
    stop = end if end is not None else mf.VFR_END_S
    assert abs(len(frames) - (stop - start) * fps) <= 1.5


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_comes_out_upright(tmp_path: Path, degrees: int) -> None:
    path = mf.rotated_video(tmp_path / f"rot{degrees}.mp4", degrees=degrees)
    p = media.probe(path)
    assert p.rotation == degrees and (p.coded_width, p.coded_height) == (160, 120)
    assert (p.width, p.height) == ((120, 160) if degrees != 180 else (160, 120))
    frames, _ = media.decode_frames(path, 0, None, 5, (p.width, p.height))
    f = frames[0].astype(int)
    h, w = f.shape[:2]
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 255])
    # Coded: red on top. Clockwise 90 -> red right; 180 -> bottom; 270 -> left.
    at = {90: ((h // 2, w - 5), (h // 2, 5)), 180: ((h - 5, w // 2), (5, w // 2)),
          270: ((h // 2, 5), (h // 2, w - 5))}[degrees]
    assert np.abs(f[at[0]] - red).max() < 40 and np.abs(f[at[1]] - blue).max() < 40


def test_ten_bit_comes_out_as_uint8(mdir: Path) -> None:
    ten = mf.ten_bit_video(mdir / "ten.mp4")
    eight = mf.good_video(mdir / "eight.mp4", seconds=1, fps=10, audio=False)
    assert media.probe(ten).bit_depth == 10
    a, _ = media.decode_frames(ten, 0, None, 5, 64)
    b, _ = media.decode_frames(eight, 0, None, 5, 64)
    assert a.dtype == np.uint8 and a.shape == b.shape == (5, 64, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 8  # same picture, same range


def test_sizes_crop_and_exact(good: Path) -> None:
    frames, stamps = media.decode_frames(good, 0, 1.0, 4, 48)
    assert frames.shape == (4, 48, 48, 3) and frames.dtype == np.uint8
    assert np.allclose(stamps, [0, 0.25, 0.5, 0.75]) and stamps.dtype == np.float64
    frames, _ = media.decode_frames(good, 0, 1.0, 4, (40, 30))
    assert frames.shape == (4, 30, 40, 3)
    full, _ = media.decode_frames(good, 0, 1.0, 4, (160, 120))
    crop, _ = media.decode_frames(good, 0, 1.0, 4, 120)  # short side 120: centre crop
    assert np.abs(full[:, :, 20:140].astype(int) - crop.astype(int)).mean() < 6


def test_fps_count_and_window(good: Path) -> None:
    frames, stamps = media.decode_frames(good, 0, None, 2, 32)
    assert len(frames) == 6 and stamps[-1] == pytest.approx(2.5)
    frames, stamps = media.decode_frames(good, 1.0, 2.5, 4, 32)
    assert len(frames) == 6 and stamps[0] == pytest.approx(1.0)
    frames, _ = media.decode_frames(good, 10.0, None, 2, 32)  # past the end
    assert frames.shape == (0, 32, 32, 3)
    with pytest.raises(ValueError):
        media.decode_frames(good, 2.0, 1.0, 2, 32)


def test_decode_failure_is_decode_failed(tmp_path: Path) -> None:
    path = mf.unsupported_codec(tmp_path / "odd.mkv")
    with pytest.raises(IngestError) as exc:
        media.decode_frames(path, 0, None, 2, 32)
    assert (_code(exc), exc.value.stage) == ("decode_failed", "decode")


@pytest.mark.parametrize("name", mf.weird_names(), ids=repr)
def test_weird_file_names_work(tmp_path: Path, good: Path, name: str) -> None:
    path = mf.copy_as(good, tmp_path / name)
    p = media.probe(path)
    assert media.validate(path, p).status == "ok"
    frames, _ = media.decode_frames(path, 0.5, 1.5, 2, 32)
    assert frames.shape == (2, 32, 32, 3)
