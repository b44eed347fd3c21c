"""The architecture registry: the one place that knows which networks exist.

A checkpoint records ``arch`` and ``latent_dim`` in its config.json; the entry named by
``arch`` rebuilds the encoder and decoder from them (as nanoGPT rebuilds its model from the
saved ``model_args``), and ``load_state_dict(strict=True)`` then checks the weights against
what was rebuilt. Nothing is guessed from layer names.

An entry also declares what the exporter may rewrite: ``phase_tail`` names the decoder's two
final ConvTranspose2d(kernel 4, stride 2, padding 1) layers (dotted submodule names), joined
only by elementwise ops, which vae-export turns into faster exact Convs (see
vae_export/phase.py). An architecture without such a tail leaves it ``None``.

To add an architecture: write its encoder ((N, 1, 28, 28) -> (mu, logvar)) and decoder
((N, L) -> (N, 1, 28, 28) in [0, 1], ending in a sigmoid) as two ``nn.Module`` classes
whose constructor takes the latent size, and ``register()`` an ``Architecture``.
Training, checkpoints, export and the tests that iterate ``ARCHITECTURES`` pick it up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vae_train.models import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

ROLES = ("encoder", "decoder")
# Two latent sizes the modules are built with (on the meta device, without memory) to find
# the weight axes that carry the latent size; see latent_size().
_PROBES = (5, 7)


@dataclass(frozen=True)
class Architecture:
    """One network family: how to build its modules, and what export may rewrite."""

    name: str
    encoder: Callable[[int], nn.Module]  # latent_dim -> encoder
    decoder: Callable[[int], nn.Module]  # latent_dim -> decoder
    phase_tail: tuple[str, str] | None = None
    summary: str = ""

    def build(self, role: str, latent_dim: int) -> nn.Module:
        check_latent_dim(latent_dim)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        return (self.encoder if role == "encoder" else self.decoder)(latent_dim)

    def latent_size(self, role: str, state: Mapping[str, torch.Tensor]) -> int | None:
        """The latent size a state dict of this architecture's ``role`` holds, read from the
        weight axes that follow the latent size (None if the state holds none of them)."""
        with torch.device("meta"):
            a, b = (self.build(role, n).state_dict() for n in _PROBES)
        for key, tensor in a.items():
            for axis, (da, db) in enumerate(zip(tensor.shape, b[key].shape, strict=True)):
                found = state.get(key)
                if (da, db) == _PROBES and found is not None and found.ndim == tensor.ndim:
                    return int(found.shape[axis])
        return None


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add ``arch`` to the registry (its name must be new)."""
    if not arch.name or arch.name in ARCHITECTURES:
        raise ValueError(f"architecture name {arch.name!r} is empty or already registered")
    ARCHITECTURES[arch.name] = arch
    return arch


def arch_names() -> tuple[str, ...]:
    return tuple(ARCHITECTURES)


def get_architecture(name: Any) -> Architecture:
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"unknown arch {name!r}; expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def check_latent_dim(latent_dim: Any) -> None:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")


def build_encoder(arch: str, latent_dim: int = 20) -> nn.Module:
    return get_architecture(arch).build("encoder", latent_dim)


def build_decoder(arch: str, latent_dim: int = 20) -> nn.Module:
    return get_architecture(arch).build("decoder", latent_dim)


def build_modules(config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) as a checkpoint's recorded config describes them."""
    arch, latent_dim = get_architecture(config.get("arch")), config.get("latent_dim")
    check_latent_dim(latent_dim)
    return arch.encoder(latent_dim), arch.decoder(latent_dim)


register(
    Architecture(
        "conv",
        ConvEncoder,
        ConvDecoder,
        phase_tail=("deconv1", "deconv2"),
        summary="two stride-2 convolutions, one hidden layer of 256; mirrored decoder",
    )
)
register(Architecture("mlp", MLPEncoder, MLPDecoder, summary="one hidden layer of 400 (784-400-L)"))
