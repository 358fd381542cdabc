import pytest
import torch

from vaerun.networks import MLP, Conv

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 64, 64)]


@pytest.mark.parametrize("architecture", [MLP(hidden=[64, 32]), Conv(channels=[8, 16])], ids=["mlp", "conv"])
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
