"""The diagonal Gaussian q(z|x), the family every other posterior starts from (q0)."""

from __future__ import annotations

from torch import Tensor, nn

from vaerun.models.posteriors.family import TransformFamily


class Identity(nn.Module):
    """No flow: q is the diagonal Gaussian itself."""

    def forward(self, z0: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return z0, z0.new_zeros(z0.shape[:-1])


class Gaussian(TransformFamily):
    """q(z|x) = N(mu(x), diag sigma^2(x)): the VAE of Kingma & Welling."""

    is_flow = False

    def context_features(self, latent_dim: int) -> int:
        return 0

    def build(self, latent_dim: int) -> nn.Module:
        return Identity()
