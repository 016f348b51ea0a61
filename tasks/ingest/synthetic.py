"""Deterministic synthetic video-caption corpus built from real photographs.

Objects cut out of scikit-image's photographs (a cat, an astronaut, a coffee cup, ...) move over
real textures (brick, grass, gravel, the moon, a blurred Hubble deep field as night sky). A video
is ``clips_per_video`` clips of exactly ``clip_s`` seconds, each one (object, motion) pair
captioned from a small grammar ("the cat slides left across the brick wall"); the test split
holds object-motion pairs never seen in training. Same seed -> same captions, splits, pixels
and bytes (single-threaded libx264). Parallel, resumable, manifest written last.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import multiprocessing
import os
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tasks.shared.ffbin import find_tools

GENERATOR_VERSION = 1


class ObjectSpec(NamedTuple):
    """A cut-out: photo in ``skimage/data``, crop box, mask (ellipse|dark|notblue), size factor."""

    file: str
    box: tuple[int, ...]
    mask: str
    size: float


class BackgroundSpec(NamedTuple):
    """A texture, its tint (grey photos), phrases for motions in place / across, blur."""

    file: str
    tint: tuple[float, ...]
    place: tuple[str, ...]
    path: tuple[str, ...]
    blur: float


#: The grammar's vocabulary ships as package data
#: (``tasks/ingest/sample_data/synthetic_vocab.json``).
_VOCAB = json.loads((resources.files("tasks.ingest") / "sample_data" / "synthetic_vocab.json")
                    .read_text(encoding="utf-8"))
#: noun -> photograph cut-out (cat, astronaut, space shuttle, coffee cup, rocket, ...).
OBJECTS: dict[str, ObjectSpec] = {k: ObjectSpec(v["file"], tuple(v["box"]), v["mask"], v["size"])
                                  for k, v in _VOCAB["objects"].items()}
#: motion -> caption phrases (the first is the canonical name used in the manifest).
MOTIONS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _VOCAB["motions"].items()}
#: motions that travel across the frame take a path phrase ("across the grass").
PATH_MOTIONS = frozenset(_VOCAB["path_motions"])
#: background -> texture and phrases (brick wall, grass, gravel, moon, night sky).
BACKGROUNDS: dict[str, BackgroundSpec] = {
    k: BackgroundSpec(v["file"], tuple(v["tint"]), tuple(v["place"]), tuple(v["path"]),
                      v["blur"]) for k, v in _VOCAB["backgrounds"].items()}
#: caption templates over {det} {obj} {verb} {place}.
TEMPLATES: tuple[str, ...] = tuple(_VOCAB["templates"])
SPLITS = ("train", "val", "test")
_BLOCK = 20  # splits are exact per block of 20 consecutive videos: 2 test, 2 val, 16 train
_BASE = 0.45  # longer side of an object at scale 1, as a fraction of the frame


@dataclass(frozen=True)
class SyntheticCorpus:
    """A generated corpus: folder, video and clip counts, videos per split, manifest path."""

    root: Path
    n_videos: int
    n_clips: int
    splits: dict[str, int]
    manifest: Path


@dataclass(frozen=True)
class ClipPlan:
    """One clip: an object doing one motion; ``params`` (4 in [-1, 1]) jitter the path."""

    clip: int
    start: float
    end: float
    object: str
    motion: str
    text: str
    params: tuple[float, ...]


@dataclass(frozen=True)
class VideoPlan:
    """Everything needed to render one video, derived from (seed, index) alone."""

    index: int
    name: str
    split: str
    background: str
    bg_crop: tuple[float, ...]
    brightness: float
    clips: tuple[ClipPlan, ...]


def skimage_data_dir() -> Path:
    """Returns ``skimage/data`` without importing scikit-image; FileNotFoundError if absent."""
    spec = importlib.util.find_spec("skimage")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "data" / "chelsea.png").is_file():
            return Path(loc) / "data"
    raise FileNotFoundError("scikit-image's photographs not found: `pip install scikit-image`")


@functools.cache
def _photo(file: str) -> Image.Image:
    with Image.open(skimage_data_dir() / file) as im:
        im.load()
        return im.copy()


@functools.cache
def _master_sprite(name: str) -> Image.Image:
    """The object's cut-out as a premultiplied ``RGBa`` image."""
    spec = OBJECTS[name]
    crop = _photo(spec.file).convert("RGB").crop(spec.box)
    w, h = crop.size
    if spec.mask == "ellipse":
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).ellipse((0.02 * w, 0.02 * h, 0.98 * w, 0.98 * h), fill=255)
    elif spec.mask == "dark":
        mask = crop.convert("L").point(lambda v: 255 if v < 128 else 0)
        shade = np.linspace(1.15, 0.8, h, dtype=np.float32)[:, None, None]
        brown = np.array([116, 74, 42], np.float32) * shade * np.ones((h, w, 1), np.float32)
        crop = Image.fromarray(np.clip(brown, 0, 255).astype(np.uint8))
    elif spec.mask == "notblue":
        rgb = np.asarray(crop).astype(np.int16)
        mask = Image.fromarray(((rgb[..., 2] - rgb[..., 0]) < 20).astype(np.uint8) * 255)
        mask = mask.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3))
    else:
        raise ValueError(f"unknown mask kind {spec.mask!r}")
    crop.putalpha(mask.filter(ImageFilter.GaussianBlur(max(1.0, 0.01 * min(w, h)))))
    return crop.convert("RGBa")


@functools.lru_cache(maxsize=1024)
def _sprite_cached(name: str, longest: int, angle: int) -> np.ndarray:
    master = _master_sprite(name)
    ratio = longest / max(master.size)
    size = (max(1, round(master.size[0] * ratio)), max(1, round(master.size[1] * ratio)))
    im = master.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if angle:
        im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    arr = np.asarray(im, dtype=np.float32).copy()
    arr[..., 3] /= 255.0
    arr.setflags(write=False)
    return arr


def object_sprite(name: str, longest: float, angle: float) -> np.ndarray:
    """Cut-out of ``name`` (an :data:`OBJECTS` key), scaled and rotated.

    Args:
        name, longest, angle: object; longer side in px before rotation (times the object's
            size factor); rotation in degrees, counter-clockwise.
    Returns:
        A read-only ``h x w x 4`` float32 array: premultiplied RGB in [0, 255], alpha in [0, 1].
    """
    return _sprite_cached(name, max(2, round(longest * OBJECTS[name].size)), round(angle) % 360)


def background_image(name: str, size: int, crop: tuple[float, ...]) -> np.ndarray:
    """A ``size x size`` view of a background texture.

    Args:
        name, size, crop: a :data:`BACKGROUNDS` key; output side; three numbers in [0, 1]
            (zoom, x offset, y offset of the square view).
    Returns:
        A writable ``size x size x 3`` float32 RGB array in [0, 255].
    """
    spec = BACKGROUNDS[name]
    im = _photo(spec.file)
    side = min(im.size) * (0.55 + 0.45 * crop[0])
    x, y = (im.size[0] - side) * crop[1], (im.size[1] - side) * crop[2]
    view = im.resize((size, size), Image.Resampling.BILINEAR, box=(x, y, x + side, y + side),
                     reducing_gap=2.0)
    if spec.blur:
        view = view.filter(ImageFilter.GaussianBlur(spec.blur * size / 224))
    arr = np.asarray(view, dtype=np.float32)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return np.clip(arr * np.asarray(spec.tint, np.float32), 0.0, 255.0).astype(np.float32)


def _label_orders(seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng([seed, 1])
    return ([list(OBJECTS)[i] for i in rng.permutation(len(OBJECTS))],
            [list(MOTIONS)[i] for i in rng.permutation(len(MOTIONS))])


def held_out_combos(seed: int = 0) -> list[tuple[str, str]]:
    """The object-motion pairs reserved for the test split.

    One pair per object on a diagonal of the seed-permuted 9 x 9 object x motion grid, so each
    object and each motion keeps 8 training pairs.

    Args:
        seed: the generator seed.
    Returns:
        The held-out (object, motion) pairs, in a fixed order.
    """
    objects, motions = _label_orders(seed)
    return [(o, motions[(2 * i + 3) % len(motions)]) for i, o in enumerate(objects)]


def _train_combos(seed: int) -> list[tuple[str, str]]:
    """All other pairs, ordered so any window of ~9 covers (nearly) every object and motion."""
    objects, motions = _label_orders(seed)
    held = set(held_out_combos(seed))
    n_obj = len(objects)
    pairs = [(objects[k % n_obj], motions[(k % n_obj + k // n_obj) % len(motions)])
             for k in range(n_obj * len(motions))]
    return [p for p in pairs if p not in held]


def split_of(index: int, seed: int = 0) -> str:
    """The split of video ``index``: exactly 2 test, 2 val and 16 train per block of 20.

    Args:
        index, seed: the video number and the generator seed.
    Returns:
        ``"train"``, ``"val"`` or ``"test"``.
    """
    perm = np.random.default_rng([seed, 2, index // _BLOCK]).permutation(_BLOCK)
    rank = int(perm[index % _BLOCK])
    return "test" if rank < 2 else "val" if rank < 4 else "train"


def _caption(rng: np.random.Generator, obj: str, motion: str, background: str) -> str:
    verb = MOTIONS[motion][int(rng.integers(len(MOTIONS[motion])))]
    bg = BACKGROUNDS[background]
    phrases = bg.path if motion in PATH_MOTIONS else bg.place
    place = phrases[int(rng.integers(len(phrases)))]
    det = "the" if rng.random() < 0.5 else ("an" if obj[0] in "aeiou" else "a")
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(det=det, obj=obj, verb=verb, place=place)


def plan_video(index: int, *, seed: int = 0, clip_s: float = 1.5,
               clips_per_video: int = 2) -> VideoPlan:
    """Plan video ``index`` (background, clips, captions, trajectories) without rendering.

    The plan depends only on (seed, index), not on ``n``: a larger ``n`` extends a corpus.

    Args:
        index, seed: the video number and the generator seed.
        clip_s, clips_per_video: clip length in seconds and clips per video.
    Returns:
        The video's plan.
    """
    rng = np.random.default_rng([seed, 3, index])
    split = split_of(index, seed)
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    pool = held_out_combos(seed) if split == "test" else _train_combos(seed)
    clips = []
    for c in range(clips_per_video):
        obj, motion = pool[(index * clips_per_video + c) % len(pool)]
        params = tuple(float(v) for v in rng.uniform(-1.0, 1.0, size=4))
        clips.append(ClipPlan(
            clip=c, start=round(c * clip_s, 6), end=round((c + 1) * clip_s, 6), object=obj,
            motion=motion, text=_caption(rng, obj, motion, background), params=params))
    return VideoPlan(index=index, name=f"syn_{index:06d}.mp4", split=split,
                     background=background,
                     bg_crop=tuple(float(v) for v in rng.uniform(0.0, 1.0, size=3)),
                     brightness=float(rng.uniform(0.9, 1.1)), clips=tuple(clips))


def motion_state(motion: str, t: float,
                 params: tuple[float, ...]) -> tuple[float, float, float, float]:
    """Object state at clip time ``t`` in [0, 1].

    Args:
        motion, t, params: a :data:`MOTIONS` key; the fraction of the clip elapsed; four
            numbers in [-1, 1] that jitter the trajectory.
    Returns:
        (cx, cy, scale, angle): centre as fractions of the frame, size relative to the base
        object size, rotation in degrees (counter-clockwise).
    """
    p0, p1, p2, p3 = params[:4]
    x, y, s = 0.5 + 0.12 * p0, 0.5 + 0.1 * p1, 1.0 + 0.1 * p2
    lo, hi = 0.27 + 0.03 * p2, 0.73 + 0.03 * p3
    zig = 1.5 * t + 0.25
    states = {
        "slides left": (hi + (lo - hi) * t, y, s, 0.0),
        "slides right": (lo + (hi - lo) * t, y, s, 0.0),
        "moves up": (x, hi + (lo - hi) * t, s, 0.0),
        "falls down": (x, 0.25 + 0.5 * t * t, s, 0.0),
        "spins": (x, y, s, math.copysign(360.0 * t, p3)),
        "grows": (x, y, 0.5 + 0.85 * t, 0.0),
        "shrinks": (x, y, 1.35 - 0.85 * t, 0.0),
        "bounces": (x, 0.7 - 0.38 * abs(math.sin(2.0 * math.pi * t)), s, 0.0),
        "zigzags": (lo + (hi - lo) * t if p3 >= 0 else hi + (lo - hi) * t,
                    0.5 + 0.16 * (4.0 * abs(zig - math.floor(zig + 0.5)) - 1.0), s, 0.0),
    }
    if motion not in states:
        raise ValueError(f"unknown motion {motion!r}")
    return states[motion]


def _composite(frame: np.ndarray, sprite: np.ndarray, cx: float, cy: float,
               gain: float) -> None:
    """Alpha-blend a premultiplied float sprite (RGB times ``gain``) into a uint8 ``frame``."""
    (fh, fw), (h, w) = frame.shape[:2], sprite.shape[:2]
    x0, y0 = int(round(cx * fw - w / 2)), int(round(cy * fh - h / 2))
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + w, fw), min(y0 + h, fh)
    if fx0 < fx1 and fy0 < fy1:
        spr = sprite[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        out = frame[fy0:fy1, fx0:fx1] * (1.0 - spr[..., 3:4]) + spr[..., :3] * gain
        frame[fy0:fy1, fx0:fx1] = np.clip(out, 0.0, 255.0).astype(np.uint8)


def _frames_per_clip(fps: int, clip_s: float) -> int:
    per_clip = round(fps * clip_s)
    if per_clip < 2 or abs(per_clip - fps * clip_s) > 1e-6:
        raise ValueError(f"clip_s * fps must be a whole number >= 2, got {clip_s} * {fps}")
    return per_clip


def render_frames(plan: VideoPlan, *, size: int = 224, fps: int = 20,
                  clip_s: float = 1.5) -> Iterator[np.ndarray]:
    """Render the frames of a planned video.

    Args:
        plan, size, fps, clip_s: from :func:`plan_video`; frame side in px; frames per second;
            clip length in seconds (``clip_s * fps`` whole).
    Returns:
        ``len(plan.clips) * clip_s * fps`` RGB frames (``size x size x 3`` uint8).
    """
    per_clip = _frames_per_clip(fps, clip_s)
    background = background_image(plan.background, size, plan.bg_crop) * plan.brightness
    background = np.clip(background, 0.0, 255.0).astype(np.uint8)
    for clip in plan.clips:
        for f in range(per_clip):
            cx, cy, scale, angle = motion_state(clip.motion, f / (per_clip - 1), clip.params)
            frame = background.copy()
            sprite = object_sprite(clip.object, _BASE * size * scale, angle)
            _composite(frame, sprite, cx, cy, plan.brightness)
            yield frame


@functools.cache
def _encoder_args() -> tuple[str, ...]:
    """Deterministic encoder settings: single-threaded libx264 if present, else mpeg4."""
    out = subprocess.run([find_tools().ffmpeg, "-hide_banner", "-encoders"], capture_output=True,
                         text=True, timeout=30, check=False).stdout
    if " libx264 " in out:
        return ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-threads", "1")
    return ("-c:v", "mpeg4", "-q:v", "3", "-threads", "1")


def is_complete_video(path: Path) -> bool:
    """Cheap check that ``path`` is a finished output of this generator (renamed into place
    after ffmpeg succeeded; ``+faststart`` puts ``moov`` up front once muxing is done).

    Args:
        path: a video path.
    Returns:
        True when the file exists and has a complete MP4 header.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return len(head) >= 64 and head[4:8] == b"ftyp" and b"moov" in head


def _encode(plan: VideoPlan, dest: Path, size: int, fps: int, clip_s: float) -> None:
    """Render ``plan``, pipe it to ffmpeg as rawvideo into a temp file, rename it to ``dest``."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    cmd = [find_tools().ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(fps),
           "-i", "-", "-an", *_encoder_args(), "-pix_fmt", "yuv420p",
           "-g", str(_frames_per_clip(fps, clip_s)), "-sc_threshold", "0",
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
           "-movflags", "+faststart", "-f", "mp4", str(tmp)]
    raw = b"".join(f.tobytes() for f in render_frames(plan, size=size, fps=fps, clip_s=clip_s))
    with tempfile.TemporaryFile() as errlog:
        rc = subprocess.run(cmd, input=raw, stdout=subprocess.DEVNULL, stderr=errlog,
                            timeout=300, check=False).returncode
        if rc != 0:
            tmp.unlink(missing_ok=True)
            errlog.seek(0)
            log = errlog.read().decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"ffmpeg failed ({rc}) on {dest.name}: {log}")
    os.replace(tmp, dest)


def _render_chunk(indices: list[int], videos_dir: str, opts: dict[str, float]) -> int:
    """Worker: render every missing video of ``indices``; returns how many were handled."""
    size, fps, clip_s = int(opts["size"]), int(opts["fps"]), float(opts["clip_s"])
    for index in indices:
        plan = plan_video(index, seed=int(opts["seed"]), clip_s=clip_s,
                          clips_per_video=int(opts["clips_per_video"]))
        if not is_complete_video(Path(videos_dir) / plan.name):
            _encode(plan, Path(videos_dir) / plan.name, size, fps, clip_s)
    return len(indices)


def _write_text_atomic(dest: Path, text: str) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)


def _prepare_out_dir(root: Path, opts: dict[str, float]) -> Path:
    """Create the folders; drop videos made with other settings (``.synthetic.json``)."""
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for leftover in videos.glob(".syn_*.mp4.tmp-*"):
        leftover.unlink(missing_ok=True)
    settings = root / ".synthetic.json"
    wanted = json.dumps({"generator": GENERATOR_VERSION, **opts}, sort_keys=True) + "\n"
    if not settings.is_file() or settings.read_text(encoding="utf-8") != wanted:
        for old in videos.glob("syn_*.mp4"):
            old.unlink()
        (root / "captions.jsonl").unlink(missing_ok=True)
        _write_text_atomic(settings, wanted)
    return videos


def _run_chunks(chunks: list[list[int]], videos: Path, opts: dict[str, float], workers: int,
                progress: Callable[[int], None]) -> None:
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            progress(_render_chunk(chunk, str(videos), opts))
        return
    ctx = multiprocessing.get_context("spawn")  # not fork: the caller may hold threads/locks
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_render_chunk, c, str(videos), opts) for c in chunks]
        for fut in as_completed(futures):
            progress(fut.result())


def generate_synthetic(out_dir: Path, n: int, *, seed: int = 0, size: int = 224, fps: int = 20,
                       clip_s: float = 1.5, clips_per_video: int = 2,
                       workers: int | None = None,
                       progress: Callable[[int], None] | None = None) -> SyntheticCorpus:
    """Generate (or complete) a synthetic corpus of ``n`` captioned videos.

    Args:
        out_dir, n: output folder (``videos/``, ``captions.jsonl``, ``.synthetic.json``) and
            number of videos.
        seed: generator seed; the same seed gives the same captions, splits and pixels.
        size, fps, clip_s, clips_per_video: frame side (even), frames per second, clip length
            in seconds (``clip_s * fps`` whole), clips per video.
        workers: processes (default ``os.cpu_count()``); 1 renders in this process. Workers
            are spawned (not forked): scripts must call this under ``if __name__ == "__main__"``.
        progress: called with the number of videos finished (or found complete) since the
            previous call.
    Returns:
        The corpus summary. Complete videos are kept (resume); videos made with other
        settings are replaced; videos beyond ``n`` are left alone but not listed. The manifest
        is written last, atomically.
    """
    if n < 0 or size < 16 or size % 2 or clips_per_video < 1:
        raise ValueError("need n >= 0, an even size >= 16 and clips_per_video >= 1")
    _frames_per_clip(fps, clip_s)
    root = Path(out_dir)
    opts: dict[str, float] = {"seed": seed, "size": size, "fps": fps, "clip_s": clip_s,
                              "clips_per_video": clips_per_video}
    videos = _prepare_out_dir(root, opts)
    workers = max(1, workers or os.cpu_count() or 1)
    chunk = max(1, min(16, n // (workers * 4)))
    chunks = [list(range(i, min(i + chunk, n))) for i in range(0, n, chunk)]
    _run_chunks(chunks, videos, opts, workers, progress or (lambda _: None))

    plans = [plan_video(i, seed=seed, clip_s=clip_s, clips_per_video=clips_per_video)
             for i in range(n)]
    lines = [json.dumps({"path": f"videos/{p.name}", "start": c.start, "end": c.end,
                         "text": c.text, "split": p.split, "object": c.object,
                         "motion": c.motion, "background": p.background, "clip": c.clip})
             for p in plans for c in p.clips]
    manifest = root / "captions.jsonl"
    _write_text_atomic(manifest, "".join(line + "\n" for line in lines))
    counts = Counter(p.split for p in plans)
    return SyntheticCorpus(root=root, n_videos=n, n_clips=len(lines),
                           splits={s: counts.get(s, 0) for s in SPLITS}, manifest=manifest)
