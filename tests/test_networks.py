import functools

import pytest
import torch
from conftest import shipped_option
from hydra.utils import instantiate

from vaerun.models.autoencoders import VariationalAutoencoder
from vaerun.models.likelihoods import DiscretizedLogisticLikelihood, GaussianLikelihood
from vaerun.models.networks import MLP, Conv, ResidualBlock, ResNet, fold_batch_norm, running_statistics

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 64, 64)]


@pytest.mark.parametrize(
    "architecture",
    [MLP(hidden=[64, 32]), Conv(channels=[8, 16]), ResNet(channels=[8, 16], blocks=2)],
    ids=["mlp", "conv", "resnet"],
)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_encoder_and_decoder_adapt_to_the_image_shape(architecture, shape):
    x = torch.rand(5, *shape)
    encoder, decoder = architecture.encoder(shape, 6), architecture.decoder(3, shape)
    assert encoder(x).shape == (5, 6)
    assert decoder(torch.randn(5, 3)).shape == (5, *shape)


def test_mlp_decoder_mirrors_the_encoder():
    mlp = MLP(hidden=[512, 256])
    encoder, decoder = mlp.encoder((1, 28, 28), 20), mlp.decoder(20, (1, 28, 28))
    widths = [m.out_features for m in encoder if isinstance(m, torch.nn.Linear)]
    back = [m.in_features for m in decoder if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 256, 20] and back == [20, 256, 512]


def test_conv_on_a_size_it_cannot_halve_is_refused_up_front():
    with pytest.raises(ValueError, match="divisible by 4"):
        Conv(channels=[8, 16]).encoder((1, 30, 30), 4)
    with pytest.raises(ValueError, match="divisible by 8"):
        Conv(channels=[8, 16, 32]).decoder(4, (1, 28, 28))


@pytest.mark.parametrize(
    ("image_shape", "channels"),
    [
        ((1, 28, 28), [32, 64]),
        ((3, 32, 32), [32, 64, 128]),
        ((3, 64, 64), [32, 64, 128, 256]),
        ((1, 8, 8), [32]),
    ],
)
def test_a_conv_net_without_channels_takes_its_depth_from_the_image_size(image_shape, channels):
    architecture = Conv()
    assert architecture.channels(image_shape) == channels
    encoder, decoder = architecture.encoder(image_shape, 6), architecture.decoder(3, image_shape)
    assert [m.out_channels for m in encoder if isinstance(m, torch.nn.Conv2d)] == channels
    x = torch.rand(2, *image_shape)
    assert encoder(x).shape == (2, 6) and decoder(torch.zeros(2, 3)).shape == (2, *image_shape)


def test_a_conv_net_without_channels_refuses_an_odd_size():
    with pytest.raises(ValueError, match="the 7x7 images cannot be halved"):
        Conv().encoder((1, 7, 7), 4)


def test_a_resnet_has_residual_blocks_at_every_resolution_of_both_halves():
    architecture = ResNet(blocks=2)
    encoder, decoder = architecture.encoder((3, 32, 32), 8), architecture.decoder(4, (3, 32, 32))
    for network in (encoder, decoder):
        assert sum(isinstance(m, ResidualBlock) for m in network) == 2 * 3  # 32 -> 16 -> 8 -> 4
    block = ResidualBlock(4, torch.nn.ReLU)
    torch.nn.init.zeros_(block.body[-1].weight), torch.nn.init.zeros_(block.body[-1].bias)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(block(x), x)  # a block whose correction is zero passes its input through


@pytest.mark.parametrize(
    "architecture", [Conv(channels=[8, 16]), ResNet(channels=[8, 16])], ids=["conv", "resnet"]
)
def test_conv_nets_run_channels_last_with_the_values_and_names_of_the_usual_layout(architecture):
    shape = (3, 32, 32)
    encoder, decoder = architecture.encoder(shape, 6), architecture.decoder(3, shape)
    assert next(iter(encoder.state_dict())) == "0.weight"  # checkpoints keep their parameter names
    assert all(
        p.is_contiguous(memory_format=torch.channels_last) for p in encoder.parameters() if p.dim() == 4
    )
    x, z = torch.rand(4, *shape), torch.randn(4, 3)
    out = decoder(z)
    assert out.is_contiguous()  # callers may view the output as (N, C*H*W)
    # the same layers run through plain nn.Sequential with channels-first weights give the same numbers
    plain_encoder = torch.nn.Sequential(*encoder).to(memory_format=torch.contiguous_format)
    plain_decoder = torch.nn.Sequential(*decoder).to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(encoder(x), plain_encoder(x))
    torch.testing.assert_close(out, plain_decoder(z))


@pytest.mark.parametrize(
    "architecture",
    [MLP(hidden=[64, 32]), Conv(channels=[8, 16]), ResNet(channels=[8, 16], blocks=1)],
    ids=["mlp", "conv", "resnet"],
)
def test_learned_gaussian_scales_start_at_the_initial_value_for_every_code(architecture):
    """The decoder's last layer starts with zero weights to the log standard deviations only: every pixel
    of every code starts at the configured spread, the means still vary with the code (and a trained
    checkpoint loads its own weights over these)."""
    torch.manual_seed(0)
    likelihood = GaussianLikelihood(learn_std=True, initial_std=0.2)
    model = VariationalAutoencoder(architecture, likelihood, 3, (3, 8, 8))
    output = model.decode(torch.randn(6, 3))
    assert output[:, 3:].abs().max() == 0
    assert output[:, :3].std(dim=0).min() > 0  # every mean still depends on the code
    _, std = likelihood._split(output)
    torch.testing.assert_close(std, torch.full_like(std, 0.2))


@pytest.mark.parametrize(
    "architecture",
    [MLP(hidden=[16]), Conv(channels=[4, 8]), ResNet(channels=[4, 8], blocks=1)],
    ids=["mlp", "conv", "resnet"],
)
def test_a_faithful_logistics_scales_train_their_own_weights_and_send_no_gradient_into_the_decoder(
    architecture,
):
    """The same outputs as without; the log-scales' gradient reaches the last layer's weights to them and
    nothing before it; the locations' reaches every layer."""
    torch.manual_seed(0)
    faithful = VariationalAutoencoder(
        architecture, DiscretizedLogisticLikelihood(faithful=True), 3, (3, 8, 8)
    )
    plain = VariationalAutoencoder(architecture, DiscretizedLogisticLikelihood(), 3, (3, 8, 8))
    plain.load_state_dict(faithful.state_dict())  # the hook leaves the weights' names as they are
    z = torch.randn(5, 3)
    output = faithful.decode(z)
    torch.testing.assert_close(output, plain.decode(z))
    # one component with its unread weight channel (the class default): weights, locations, log-scales
    output[:, 6:].sum().backward()
    last = [
        m for m in faithful.decoder.modules() if isinstance(m, (torch.nn.Linear, torch.nn.ConvTranspose2d))
    ][-1]
    before = [p for m in faithful.decoder.modules() if m is not last for p in m.parameters(recurse=False)]
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in before)
    assert last.weight.grad.abs().max() > 0
    faithful.zero_grad()
    faithful.decode(z)[:, 3:6].sum().backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in before if p.dim() > 1)


@pytest.mark.parametrize(
    "likelihood",
    [GaussianLikelihood(std=0.1), DiscretizedLogisticLikelihood(mixtures=2, initial_std=0.2, bounded=True)],
    ids=["fixed_gaussian", "logistic_mixture"],
)
def test_other_likelihoods_leave_the_decoder_as_drawn(likelihood):
    torch.manual_seed(0)
    model = VariationalAutoencoder(MLP(hidden=[16]), likelihood, 3, (3, 4, 4))
    assert (model.decode(torch.randn(6, 3)).std(dim=0) > 0).all()


def batch_norms(network: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    return [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("architecture_class", [Conv, ResNet], ids=["conv", "resnet"])
def test_a_norm_follows_every_convolution_but_the_decoders_last(architecture_class):
    architecture = architecture_class(channels=[8, 16, 32], norm=torch.nn.BatchNorm2d)
    shape = (3, 32, 32)
    encoder, decoder = architecture.encoder(shape, 6), architecture.decoder(4, shape)
    assert [n.num_features for n in batch_norms(encoder)] == [8, 16, 32]
    assert [n.num_features for n in batch_norms(decoder)] == [16, 8]  # none on the likelihood's parameters
    grid_decoder = architecture.grid_decoder(5, shape)
    assert [n.num_features for n in batch_norms(grid_decoder)] == [32, 16, 8]
    assert decoder(torch.randn(2, 4)).shape == (2, *shape)
    assert not batch_norms(architecture_class(channels=[8, 16, 32]).decoder(4, shape))  # the class default


def test_the_conv_config_normalises_and_a_config_without_norm_builds_the_net_without():
    """configs/encoder/conv.yaml sets batch norm; an encoder config saved before the option existed (an
    older checkpoint's) has no `norm` key and rebuilds the net it was trained with."""
    conv_yaml = shipped_option("encoder", "conv")
    assert len(batch_norms(instantiate(conv_yaml).encoder((3, 32, 32), 6))) == 3
    older = {k: v for k, v in conv_yaml.items() if k != "norm"}
    assert not batch_norms(instantiate(older).encoder((3, 32, 32), 6))


def test_within_running_statistics_each_sample_is_its_own_and_the_statistics_stay():
    torch.manual_seed(0)
    decoder = Conv(channels=[8, 16], norm=functools.partial(torch.nn.BatchNorm2d, momentum=0.5)).decoder(
        3, (3, 16, 16)
    )
    decoder(torch.randn(64, 3))  # training mode: the running statistics move from their start
    norms = batch_norms(decoder)
    before = [(n.running_mean.clone(), n.num_batches_tracked.clone()) for n in norms]
    z = torch.randn(4, 3)
    with running_statistics(decoder):
        alone = decoder(z[:1])
        together = decoder(torch.cat([z[:1], 10 * z[1:]]))[:1]
    torch.testing.assert_close(alone, together)  # the other samples do not change the first one's output
    for n, (mean, tracked) in zip(norms, before, strict=True):
        assert n.training and torch.equal(n.running_mean, mean)
        assert torch.equal(n.num_batches_tracked, tracked)
    assert not torch.allclose(decoder(z)[:1], decoder(torch.cat([z[:1], 10 * z[1:]]))[:1])  # batch statistics


def trained_norms(network: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """``network`` in eval mode with batch norms whose statistics and affine maps are no longer the identity
    they start as (a few training-mode passes move the running statistics)."""
    for norm in network.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            torch.nn.init.uniform_(norm.weight, 0.5, 2.0)
            torch.nn.init.normal_(norm.bias)
    for scale in (1.0, 3.0, 0.5):
        network(scale * x + 0.2)
    return network.eval()


@pytest.mark.parametrize("architecture_class", [Conv, ResNet], ids=["conv", "resnet"])
def test_folding_the_batch_norms_keeps_every_output_and_the_other_layers_places(architecture_class):
    torch.manual_seed(0)
    architecture, shape = architecture_class(channels=[8, 16], norm=torch.nn.BatchNorm2d), (3, 16, 16)
    cases = [
        (architecture.encoder(shape, 6), torch.rand(8, *shape)),
        (architecture.decoder(4, shape), torch.randn(8, 4)),
        (architecture.grid_decoder(5, shape), torch.randn(8, 5, 4, 4).to(memory_format=torch.channels_last)),
    ]
    for network, x in cases:
        trained_norms(network, x)
        with torch.no_grad():
            expected = network(x)
        layers = [type(m) for m in network]
        assert fold_batch_norm(network) is network and not batch_norms(network)
        # each batch norm's place is an identity; every other layer stays where it was
        assert [type(m) for m in network] == [
            torch.nn.Identity if kind is torch.nn.BatchNorm2d else kind for kind in layers
        ]
        convolutions = [
            m for m in network.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
        ]
        assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convolutions)
        with torch.no_grad():
            torch.testing.assert_close(network(x), expected, rtol=1e-5, atol=1e-5)


def test_folding_takes_a_linear_layers_batch_norm_and_refuses_a_network_in_training_mode():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU())
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(network)  # training mode normalises by the batch: nothing to fold
    x = torch.randn(16, 4)
    expected = trained_norms(network, x)(x)
    fold_batch_norm(network)
    assert isinstance(network[1], torch.nn.Identity)
    torch.testing.assert_close(network(x), expected, rtol=1e-5, atol=1e-5)
