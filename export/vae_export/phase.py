"""An exact rewrite of a decoder's two final ConvTranspose2d(kernel 4, stride 2, padding 1)
layers into plain convolutions over a "phase" grid (``vae-export``'s default decoder form).
Which layers: the architecture registry's ``phase_tail`` (vae_train.architectures).

Why: ONNX Runtime's CPU ConvTranspose runs one small GEMM per image plus a col2im scatter,
about half the speed of its blocked (NCHWc) Conv. A stride-2 transposed convolution is four
ordinary convolutions, one per output phase: output pixel (2i + a, 2j + b) only reads input
rows i-1, i (a = 0, through kernel rows 3, 1) or i, i+1 (a = 1, through rows 2, 0), and the
same for columns with b. So

* the first layer becomes four 2x2 Convs on the 7x7 grid, one per phase (a, b), each with
  its own zero padding; concatenated they hold the 14x14 map as P[(a, b, c), i, j] =
  y[c, 2i + a, 2j + b]. No multiply-add is wasted and the padding is exact.
* the ReLU between the layers is elementwise, so it applies to P unchanged.
* the second layer reads P directly: its output pixel (4i + t, 4j + u) needs the 14x14 map's
  rows 2i-1 .. 2i+2, which sit in P rows i-1 .. i+1. A grouped 1x1 Conv multiplies every
  pixel of P by the 16 kernel taps, a 3x3 Conv with 0/1 weights sums the four products that
  land on each of the 16 output phases (t, u), and PixelShuffle(4) (DepthToSpace)
  interleaves them into the 28x28 image. The 0/1 Conv is the only waste, on the layer that
  is 4% of the decoder's arithmetic.

Every intermediate stays in the Conv-friendly layout, so ORT never reorders memory between
the layers. On the 2-core AMD EPYC (family 1Ah, Zen 5) this project is benchmarked on, the
decoder goes from about 21k to 31k images/s at batch 256. Export validation checks the
rewritten graph against the original PyTorch checkpoint like any other (max abs <= 1e-5).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# output phase -> (kernel taps read by window rows 0 and 1, (padding before, after))
_PHASE = {0: ((3, 1), (1, 0)), 1: ((2, 0), (0, 1))}


def is_rewritable(layer: nn.Module) -> bool:
    return (
        isinstance(layer, nn.ConvTranspose2d)
        and layer.kernel_size == (4, 4)
        and layer.stride == (2, 2)
        and layer.padding == (1, 1)
        and layer.output_padding == (0, 0)
        and layer.dilation == (1, 1)
        and layer.groups == 1
    )


def _check(layer: nn.Module) -> nn.ConvTranspose2d:
    if not is_rewritable(layer):
        raise ValueError(
            f"cannot rewrite {layer}: needs ConvTranspose2d kernel 4, stride 2, padding 1, "
            "no output padding, dilation or groups"
        )
    assert isinstance(layer, nn.ConvTranspose2d)
    return layer


class ToPhases(nn.Module):
    """ConvTranspose2d(k4, s2, p1) whose output is returned in phase form (N, 4 C, H, W)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        w = _check(layer).weight.detach()  # (C_in, C_out, 4, 4)
        bias = layer.bias.detach() if layer.bias is not None else None
        self.pads: list[tuple[int, int, int, int]] = []
        kernels = []
        for a in (0, 1):
            for b in (0, 1):
                (ry, pad_y), (rx, pad_x) = _PHASE[a], _PHASE[b]
                k = w[:, :, list(ry)][:, :, :, list(rx)]  # (C_in, C_out, 2, 2)
                kernels.append(k.transpose(0, 1).contiguous())
                self.pads.append((pad_x[0], pad_x[1], pad_y[0], pad_y[1]))  # F.pad order
        # One tensor per phase, so the exported graph holds four plain Conv initializers.
        self.weights = nn.ParameterList(nn.Parameter(k, requires_grad=False) for k in kernels)
        self.bias = None if bias is None else nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        # Pad + Conv: the exporter's optimizer folds each Pad into its Conv's own pads.
        phases = zip(self.pads, self.weights, strict=True)
        return torch.cat([F.conv2d(F.pad(x, pad), k, self.bias) for pad, k in phases], dim=1)


class FromPhases(nn.Module):
    """ConvTranspose2d(k4, s2, p1) applied to a map given in phase form (see ToPhases).

    Two Convs: a grouped 1x1 Conv multiplies each input pixel by the 16 kernel taps (one group
    per input phase, so no multiply-add is wasted), and a 3x3 Conv whose weights are 0 or 1
    adds up the four taps that land on each output pixel, for all 16 output phases at once.
    PixelShuffle(4) (DepthToSpace) then interleaves those phases into the full-size image.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        w = _check(layer).weight.detach()  # (C_in, C_out, 4, 4)
        c_in, c_out = w.shape[:2]
        taps = w.permute(1, 2, 3, 0).reshape(16 * c_out, c_in)  # rows (c, ky, kx)
        self.taps = nn.Parameter(taps.repeat(4, 1)[:, :, None, None], requires_grad=False)
        # Output pixel (4i + t, 4j + u) is transposed-conv row 4i + t = 2r + ky - 1 of the
        # input row r = 2i + dr, dr = (t - ky + 1) / 2, which lives in phase a = dr mod 2 at
        # phase-grid row i + (dr - a) / 2; the same for columns.
        k = torch.zeros(c_out, 4, 4, 2, 2, c_out, 4, 4, 3, 3, dtype=w.dtype)
        for t, ky, u, kx in itertools.product(range(4), repeat=4):
            if (t - ky + 1) % 2 or (u - kx + 1) % 2:
                continue
            dr, dc = (t - ky + 1) // 2, (u - kx + 1) // 2
            a, b = dr % 2, dc % 2
            for c in range(c_out):
                k[c, t, u, a, b, c, ky, kx, (dr - a) // 2 + 1, (dc - b) // 2 + 1] = 1.0
        self.gather = nn.Parameter(k.reshape(16 * c_out, 64 * c_out, 3, 3), requires_grad=False)
        bias = None if layer.bias is None else layer.bias.detach().repeat_interleave(16)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, p: Tensor) -> Tensor:
        products = F.conv2d(p, self.taps, groups=4)
        return F.pixel_shuffle(F.conv2d(products, self.gather, self.bias, padding=1), 4)


def phases_to_map(p: Tensor) -> Tensor:
    """P[(a, b, c), i, j] -> y[c, 2i + a, 2j + b] (for tests and reading ToPhases' output)."""
    n, c4, h, w = p.shape
    c = c4 // 4
    return p.view(n, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, 2 * h, 2 * w)


def rewrite_decoder(decoder: nn.Module, tail: Sequence[str] | None) -> tuple[nn.Module, int]:
    """A copy of ``decoder`` in phase form, and how many layers were rewritten (0 or 2).

    ``tail`` names the decoder's two final ConvTranspose2d layers (dotted submodule names, as
    the architecture registry's ``phase_tail`` declares them), whose first output reaches the
    second only through elementwise ops; ``None`` leaves the decoder unchanged.
    """
    if not tail:
        return decoder, 0
    first, second = (decoder.get_submodule(name) for name in tail)
    out = copy.deepcopy(decoder)
    for name, layer in ((tail[0], ToPhases(first)), (tail[1], FromPhases(second))):
        parent, _, attr = name.rpartition(".")
        setattr(out.get_submodule(parent), attr, layer)
    return out, 2
