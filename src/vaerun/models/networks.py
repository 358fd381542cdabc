"""Encoder and decoder architectures that adapt to the data's image shape.

An architecture is a small recipe object (built by Hydra from ``configs/encoder/*.yaml``) with two methods:
``encoder(image_shape, out_features)`` maps images (N, C, H, W) to (N, out_features), and
``decoder(latent_dim, image_shape)`` maps codes (N, K) to per-pixel outputs (N, C, H, W), unconstrained
(logits); the likelihood turns them into means. The decoder mirrors the encoder.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from vaerun.core.checks import check_encoder
from vaerun.core.spec import conv_depth

Activation = Callable[[], nn.Module]
Normalization = Callable[[int], nn.Module]  # channels -> a layer, e.g. nn.BatchNorm2d


@contextmanager
def running_statistics(module: nn.Module) -> Iterator[None]:
    """Within: ``module``'s batch norms normalise with their running statistics, as in eval mode, and leave
    them unchanged. In training mode a batch norm couples the samples of a batch through its statistics; an
    MCMC chain's target must be a function of its own sample alone, and a learned prior (the VampPrior's
    pseudo-inputs) one of the parameters alone."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for norm in norms:
        norm.eval()
    try:
        yield
    finally:
        for norm in norms:
            norm.train()


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` (in eval mode) with each batch norm that follows a convolution or a linear layer in a
    ``nn.Sequential`` folded into that layer's weights and bias, and replaced by ``nn.Identity`` (the
    other layers keep their places); in place, returned. The outputs stay the same to float rounding: in
    eval mode a batch norm is an affine map per channel of its running statistics. For inference: about
    a tenth of a 64-px conv decoder's forward time is its batch norms' passes over the feature maps."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d)
    if any(m.training for m in module.modules() if isinstance(m, norms)):
        raise ValueError("fold_batch_norm needs the module in eval mode: training normalises by the batch")
    for sequence in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i, (layer, norm) in enumerate(itertools.pairwise(list(sequence))):
            if not isinstance(norm, norms) or norm.running_mean is None:
                continue
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                folded = fuse_conv_bn_eval(layer, norm, transpose=isinstance(layer, nn.ConvTranspose2d))
                if layer.weight.is_contiguous(memory_format=torch.channels_last):
                    folded = folded.to(memory_format=torch.channels_last)
            elif isinstance(layer, nn.Linear):
                folded = fuse_linear_bn_eval(layer, norm)
            else:
                continue
            sequence[i], sequence[i + 1] = folded, nn.Identity()
    return module


class MLP:
    """Fully connected: flatten, ``hidden`` layers, linear out; the decoder uses the hidden sizes reversed."""

    def __init__(self, hidden: Sequence[int] = (512, 256), activation: Activation = nn.ReLU) -> None:
        self.hidden = [int(n) for n in hidden]
        self.activation = activation

    def _stack(self, sizes: list[int]) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes[:-1]):
            layers += [nn.Linear(n_in, n_out), self.activation()]
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        return layers

    def encoder(self, image_shape: Sequence[int], out_features: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), *self._stack([math.prod(image_shape), *self.hidden, out_features]))

    def decoder(self, latent_dim: int, image_shape: Sequence[int]) -> nn.Module:
        sizes = [latent_dim, *reversed(self.hidden), math.prod(image_shape)]
        return nn.Sequential(*self._stack(sizes), nn.Unflatten(1, tuple(image_shape)))


def _output_layer(decoder: nn.Module, channels: slice, total_channels: int) -> tuple[nn.Module, slice]:
    """The decoder's last layer (linear, convolution or transposed convolution) and which of its outputs
    make ``channels`` of the image's ``total_channels``: a linear layer's outputs are the channels one after
    another, as ``nn.Unflatten`` reads them."""
    layers = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    last = [module for module in decoder.modules() if isinstance(module, layers)][-1]
    if isinstance(last, nn.Linear):
        per_channel = last.out_features // total_channels
        channels = slice(channels.start * per_channel, channels.stop * per_channel)
    return last, channels


def detach_features_of_output_channels(decoder: nn.Module, channels: slice, total_channels: int) -> None:
    """The decoder's last layer makes ``channels`` of its output (a likelihood's learned scales) from its
    input detached, while gradients are on: those outputs train the layer's own weights to them and send
    no gradient into the layers before, which learn from the other outputs alone (Stirn et al. 2023). The
    values are the same; training runs the last layer twice. A forward hook: the weights keep their names."""
    last, outputs = _output_layer(decoder, channels, total_channels)
    dim = -1 if isinstance(last, nn.Linear) else -3

    def from_detached_features(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return output
        detached = module.forward(inputs[0].detach())  # forward itself: this hook is not called again
        size = output.shape[dim]
        return torch.cat(
            [
                output.narrow(dim, 0, outputs.start),
                detached.narrow(dim, outputs.start, outputs.stop - outputs.start),
                output.narrow(dim, outputs.stop, size - outputs.stop),
            ],
            dim=dim,
        )

    last.register_forward_hook(from_detached_features)


def zero_output_channels(decoder: nn.Module, channels: slice, total_channels: int) -> None:
    """Zero the weights and biases by which the decoder's last layer makes ``channels`` of its
    ``total_channels`` output channels: those outputs start at 0 for every code, whatever the layers
    before them."""
    last, channels = _output_layer(decoder, channels, total_channels)
    with torch.no_grad():
        weight = last.weight[:, channels] if isinstance(last, nn.ConvTranspose2d) else last.weight[channels]
        weight.zero_()
        if last.bias is not None:
            last.bias[channels].zero_()


class ChannelsLastEncoder(nn.Sequential):
    """Takes its input in channels-last memory order: oneDNN on a CPU and cuDNN on a GPU run convolutions
    faster on it (transposed ones most: 2.3 times the speed of a 64-to-32-channel one forward on a CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


class ChannelsLastDecoder(nn.Sequential):
    """Hands back its output in the usual contiguous order, so that callers may ``view`` it."""

    def forward(self, z: Tensor) -> Tensor:
        return super().forward(z).contiguous()


class UnflattenChannelsLast(nn.Unflatten):
    """``nn.Unflatten`` to (C, H, W) feature maps laid out channels-last for the transposed convolutions."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).contiguous(memory_format=torch.channels_last)


class Conv:
    """Strided convolutions (kernel 4, stride 2, padding 1: each halves height and width), then a linear
    layer to the code; the decoder mirrors it with transposed convolutions that double the size.

    ``channels`` None: one layer per halving the image size allows (``vaerun.core.spec.conv_depth``: 2 at
    28 px, 3 at 32, 4 at 64), with ``base_channels`` doubling at each (32, 64, 128, 256).

    ``norm`` (channels -> layer, e.g. ``nn.BatchNorm2d``): a normalisation after every convolution but the
    decoder's last, before its activation, as in DCGAN's and pythae's conv nets. None (the class default,
    so checkpoints saved without one rebuild as they were): none. configs/encoder/conv.yaml sets batch norm:
    on the photo patches it took the learned colour likelihoods' 5-epoch error from 0.0137-0.0260 to
    0.0114-0.0128 (docs/images.md).

    Weights and feature maps are channels-last (the same values and parameter names as the usual layout):
    a 10 epoch conv DAE on Fashion-MNIST trains about 15% faster on a 2-core CPU."""

    def __init__(
        self,
        channels: Sequence[int] | None = None,
        activation: Activation = nn.ReLU,
        base_channels: int = 32,
        norm: Normalization | None = None,
    ) -> None:
        self.fixed_channels = [int(n) for n in channels] if channels is not None else None
        self.activation = activation
        self.base_channels = int(base_channels)
        self.norm = norm

    def _norm_layers(self, channels: int) -> list[nn.Module]:
        """The normalisation layer after a convolution to ``channels``, if there is one."""
        return [self.norm(channels)] if self.norm is not None else []

    def _normalized(self, channels: int) -> list[nn.Module]:
        """The normalisation layer after a convolution to ``channels``, and the activation."""
        return [*self._norm_layers(channels), self.activation()]

    def channels(self, image_shape: Sequence[int]) -> list[int]:
        check_encoder({"channels": self.fixed_channels}, tuple(image_shape))  # a ConfigError is a ValueError
        if self.fixed_channels is not None:
            return self.fixed_channels
        return [self.base_channels * 2**i for i in range(conv_depth(image_shape))]

    def _feature_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        channels = self.channels(image_shape)
        factor = 2 ** len(channels)
        return channels[-1], image_shape[1] // factor, image_shape[2] // factor

    def encoder(self, image_shape: Sequence[int], out_features: int) -> nn.Module:
        feature_shape = self._feature_shape(image_shape)
        channels = self.channels(image_shape)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([image_shape[0], *channels[:-1]], channels, strict=True):
            layers += self._down(c_in, c_out)
        encoder = ChannelsLastEncoder(
            *layers, nn.Flatten(), nn.Linear(math.prod(feature_shape), out_features)
        )
        return encoder.to(memory_format=torch.channels_last)

    def decoder(self, latent_dim: int, image_shape: Sequence[int]) -> nn.Module:
        feature_shape = self._feature_shape(image_shape)
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, math.prod(feature_shape)),
            self.activation(),
            UnflattenChannelsLast(1, feature_shape),
        ]
        channels = self.channels(image_shape)
        outs = [*reversed(channels[:-1]), image_shape[0]]
        for i, (c_in, c_out) in enumerate(zip(reversed(channels), outs, strict=True)):
            layers += self._up(c_in, c_out, last=i == len(outs) - 1)
        return ChannelsLastDecoder(*layers).to(memory_format=torch.channels_last)

    def grid_encoder(self, image_shape: Sequence[int], code_channels: int) -> nn.Module:
        """The same convolutions without the linear layer: images to a grid of ``code_channels``-vectors,
        one per position of the last feature map (a VQ-VAE's code grid)."""
        channels = self.channels(image_shape)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([image_shape[0], *channels[:-1]], channels, strict=True):
            layers += self._down(c_in, c_out)
        layers.append(nn.Conv2d(channels[-1], code_channels, kernel_size=1))
        return ChannelsLastEncoder(*layers).to(memory_format=torch.channels_last)

    def grid_decoder(self, code_channels: int, image_shape: Sequence[int]) -> nn.Module:
        """The mirror of ``grid_encoder``: a grid of code vectors to the likelihood's parameters."""
        channels = self.channels(image_shape)
        first = nn.Conv2d(code_channels, channels[-1], kernel_size=3, padding=1)
        layers: list[nn.Module] = [first, *self._normalized(channels[-1])]
        outs = [*reversed(channels[:-1]), image_shape[0]]
        for i, (c_in, c_out) in enumerate(zip(reversed(channels), outs, strict=True)):
            layers += self._up(c_in, c_out, last=i == len(outs) - 1)
        return ChannelsLastDecoder(*layers).to(memory_format=torch.channels_last)

    def grid_shape(self, image_shape: Sequence[int]) -> tuple[int, int]:
        """Height and width of the code grid of ``grid_encoder``."""
        return self._feature_shape(image_shape)[1:]

    def _down(self, c_in: int, c_out: int) -> list[nn.Module]:
        """One stage of the encoder: halves height and width."""
        return [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), *self._normalized(c_out)]

    def _up(self, c_in: int, c_out: int, last: bool) -> list[nn.Module]:
        """One stage of the decoder: doubles height and width; the last one outputs the likelihood's
        parameters, unconstrained."""
        up = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
        return [up] if last else [up, *self._normalized(c_out)]


class ResidualBlock(nn.Module):
    """x + conv3x3(act(conv3x3(act(x)))): the shape stays, the block learns a correction."""

    def __init__(self, channels: int, activation: Activation) -> None:
        super().__init__()
        self.body = nn.Sequential(
            activation(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            activation(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNet(Conv):
    """The conv net with ``blocks`` residual blocks at every resolution (after each downsampling in the
    encoder, before each upsampling in the decoder): the small residual networks of CIFAR and CelebA
    VAEs. Depth and channels follow the image size as in ``Conv``."""

    def __init__(
        self,
        channels: Sequence[int] | None = None,
        activation: Activation = nn.ReLU,
        base_channels: int = 32,
        blocks: int = 1,
        norm: Normalization | None = None,
    ) -> None:
        super().__init__(channels, activation, base_channels, norm)
        self.blocks = int(blocks)

    def _down(self, c_in: int, c_out: int) -> list[nn.Module]:
        residual = [ResidualBlock(c_out, self.activation) for _ in range(self.blocks)]
        down = nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
        return [down, *self._norm_layers(c_out), *residual, self.activation()]

    def _up(self, c_in: int, c_out: int, last: bool) -> list[nn.Module]:
        residual = [ResidualBlock(c_in, self.activation) for _ in range(self.blocks)]
        return [*residual, *super()._up(c_in, c_out, last)]
