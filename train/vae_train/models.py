"""The encoder and decoder networks of the design notes, as two separate modules.

Both speak images of shape (N, 1, 28, 28) with values in [0, 1]. The encoder returns
(mu, logvar); the decoder maps z back to Bernoulli means. The reparameterization is a
plain function so that neither module (nor its exported graph) holds randomness. The
registry that names and builds them is vae_train.architectures.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 28 * 28


class ConvEncoder(nn.Module):
    """Conv(1->32) - Conv(32->64), 4x4 stride 2, Linear 3136->256, heads 256->L."""

    def __init__(self, latent_dim: int = 20) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.conv1 = nn.Conv2d(1, 32, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 256)
        self.fc_mu = nn.Linear(256, latent_dim)
        self.fc_logvar = nn.Linear(256, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.fc1(h.flatten(1)))
        return self.fc_mu(h), self.fc_logvar(h)


class ConvDecoder(nn.Module):
    """Linear L->256->3136, view (64, 7, 7), ConvTranspose 64->32->1, sigmoid."""

    def __init__(self, latent_dim: int = 20) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.fc2 = nn.Linear(latent_dim, 256)
        self.fc3 = nn.Linear(256, 64 * 7 * 7)
        self.deconv1 = nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(32, 1, kernel_size=4, stride=2, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = torch.relu(self.fc2(z))
        h = torch.relu(self.fc3(h)).view(-1, 64, 7, 7)
        h = torch.relu(self.deconv1(h))
        return torch.sigmoid(self.deconv2(h))


class MLPEncoder(nn.Module):
    """Linear 784->400 with heads 400->L for mu and logvar."""

    def __init__(self, latent_dim: int = 20) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.fc1 = nn.Linear(PIXELS, 400)
        self.fc_mu = nn.Linear(400, latent_dim)
        self.fc_logvar = nn.Linear(400, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc_mu(h), self.fc_logvar(h)


class MLPDecoder(nn.Module):
    """Linear L->400->784, sigmoid, viewed as (N, 1, 28, 28)."""

    def __init__(self, latent_dim: int = 20) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.fc3 = nn.Linear(latent_dim, 400)
        self.fc4 = nn.Linear(400, PIXELS)

    def forward(self, z: Tensor) -> Tensor:
        h = torch.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h)).view(-1, *IMAGE_SHAPE)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + exp(0.5 * logvar) * eps, with eps ~ N(0, I) unless given."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + eps * torch.exp(0.5 * logvar)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
