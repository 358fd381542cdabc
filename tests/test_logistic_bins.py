"""The discretized logistic's bin log-masses (vaerun.models.logistic_bins): the in-place form and the one
with its own gradients give (1)'s values, first and second derivatives, in the far tails and at the open
edge levels too."""

import pytest
import torch

from vaerun.models.autoencoders import VariationalAutoencoder
from vaerun.models.likelihoods import DiscretizedLogisticLikelihood
from vaerun.models.logistic_bins import (
    OPEN_EDGE,
    LogisticOutputs,
    bin_edges,
    fast_tanh,
    log_mass,
    log_mass_in_place,
    log_mass_of_outputs,
    log_mass_of_outputs_in_place,
    log_mass_with_own_gradients,
)
from vaerun.models.logistic_mixture import discretized_logistic_log_prob
from vaerun.models.networks import MLP


def _bins(generator, dtype, samples=3):
    """Samples x 2 images x 3 x 8 x 8 logistics, from far narrower than a level to wider than the range,
    at locations up to several hundred scales from their bins, over 8-bit levels with both edges."""
    shape = (samples, 2, 3, 8, 8, 1)
    means = (torch.rand(shape, generator=generator, dtype=dtype) * 2.4 - 1.2).requires_grad_()
    log_scales = (torch.rand(shape, generator=generator, dtype=dtype) * 14 - 7).requires_grad_()
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=generator).to(dtype) / 255 * 2 - 1
    x[0, 0, 0], x[0, 0, 1] = -1.0, 1.0
    upper, lower = bin_edges((x + 1) / 2)
    assert upper[0, 0, 1, 0] == OPEN_EDGE and lower[0, 0, 0, 0] == -OPEN_EDGE
    return means, log_scales, upper, lower


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_three_forms_give_the_same_log_masses(generator, dtype):
    means, log_scales, upper, lower = _bins(generator, dtype)
    expected = log_mass(means, log_scales, upper, lower)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    assert torch.isfinite(expected).all() and (expected <= 0).all()
    own = log_mass_with_own_gradients(means, log_scales, upper, lower)
    torch.testing.assert_close(own, expected, **tolerance)
    with torch.no_grad():
        in_place = log_mass_in_place(means, log_scales, upper, lower)
    torch.testing.assert_close(in_place, expected.detach(), **tolerance)


def test_the_own_gradients_are_autograds_of_the_plain_form(generator):
    means, log_scales, upper, lower = _bins(generator, torch.float64)
    weights = torch.rand(means.shape, generator=generator, dtype=torch.float64)
    plain = log_mass(means, log_scales, upper, lower)
    expected = torch.autograd.grad((weights * plain).sum(), (means, log_scales))
    got = torch.autograd.grad(
        (weights * log_mass_with_own_gradients(means, log_scales, upper, lower)).sum(), (means, log_scales)
    )
    for got_one, expected_one in zip(got, expected, strict=True):
        torch.testing.assert_close(got_one, expected_one)


def test_the_own_gradients_pass_finite_difference_checks_to_second_order(generator):
    """gradcheck for the closed forms, gradgradcheck for the gradient of a gradient that the Hamiltonian
    posterior's training takes (through the plain form again); edges and a broadcast bin included."""
    shape = (2, 1, 2, 2, 1)
    means = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1).requires_grad_()
    log_scales = (torch.rand(shape, generator=generator, dtype=torch.float64) * 4 - 4).requires_grad_()
    x = torch.tensor([[-1.0, 1.0], [0.2, -0.4]], dtype=torch.float64).reshape(1, 2, 2)
    upper = torch.where(x > 1 - 1 / 255, OPEN_EDGE, x + 1 / 255).unsqueeze(-1)
    lower = torch.where(x < -1 + 1 / 255, -OPEN_EDGE, x - 1 / 255).unsqueeze(-1)

    def function(m, s):
        return log_mass_with_own_gradients(m, s, upper, lower)

    assert torch.autograd.gradcheck(function, (means, log_scales))
    assert torch.autograd.gradgradcheck(function, (means, log_scales))
    only_locations = torch.autograd.grad(function(means, log_scales.detach()).sum(), means)[0]
    assert torch.isfinite(only_locations).all()


def test_the_fast_tanh_is_torchs(generator):
    raw = torch.randn(10_000, generator=generator) * 20
    with torch.no_grad():
        torch.testing.assert_close(fast_tanh(raw), torch.tanh(raw), rtol=0, atol=3e-7)
    raw.requires_grad_(True)
    assert fast_tanh(raw).grad_fn is not None


def _raw_outputs(generator, dtype, lead=(3, 2)):
    """Raw decoder outputs (..., 2, 3, 8, 8, 1): locations before the tanh over most of its range, log-scales
    before their shift from far below to far above the clamp's range."""
    raw = torch.rand((*lead, 2, 3, 8, 8, 1), generator=generator, dtype=dtype)
    raw[..., 0, :, :, :, :] = raw[..., 0, :, :, :, :] * 6 - 3
    raw[..., 1, :, :, :, :] = raw[..., 1, :, :, :, :] * 20 - 10
    return raw.requires_grad_()


@pytest.mark.parametrize("bounded", [True, False])
def test_the_log_mass_of_raw_outputs_is_the_plain_forms_of_the_started_parameters(generator, bounded):
    """Values and gradients on the raw outputs, through the tanh and the clamped shift of the log-scales
    (the clamp's gradient 0 beyond it), as autograd takes them through the plain steps; the images
    broadcast over the samples."""
    outputs = LogisticOutputs(bounded, -1.5, (-7.0, 7.0))
    raw = _raw_outputs(generator, torch.float64)
    _, _, upper, lower = _bins(generator, torch.float64)
    weights = torch.rand((3, 2, 3, 8, 8, 1), generator=generator, dtype=torch.float64)
    expected = log_mass(*outputs.started(*raw.unbind(-5)), upper, lower)
    got = log_mass_of_outputs(raw, upper, lower, outputs)
    torch.testing.assert_close(got, expected)
    expected_gradient = torch.autograd.grad((weights * expected).sum(), raw)[0]
    gradient = torch.autograd.grad((weights * got).sum(), raw)[0]
    torch.testing.assert_close(gradient, expected_gradient)
    assert (gradient[..., 1, :, :, :, :].abs() == 0).any()  # clamped log-scales were among them


@pytest.mark.parametrize("bounded", [True, False])
def test_the_log_mass_of_raw_outputs_in_their_own_buffers_is_the_plain_forms_in_float64(generator, bounded):
    """The IWAE's path: float32 outputs, scored in place, against float64's plain steps, the open edges,
    logistics far narrower than a level and locations near the edges included."""
    outputs = LogisticOutputs(bounded, -1.5, (-7.0, 7.0))
    raw = _raw_outputs(generator, torch.float64).detach()
    _, _, upper, lower = _bins(generator, torch.float64)
    expected = log_mass(*outputs.started(*raw.unbind(-5)), upper, lower)
    with torch.no_grad():
        got = log_mass_of_outputs_in_place(raw.float(), upper.float(), lower.float(), outputs)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    # float32's own rounding of a location, over a scale of e^-7, is about 1e-4 of plus and minus
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-3)


def test_the_likelihood_scores_its_own_outputs_in_place_only_without_a_graph(generator):
    likelihood = DiscretizedLogisticLikelihood(initial_std=0.2, bounded=True, one_component_weight=False)
    raw = _raw_outputs(generator, torch.float32, lead=(12,)).detach().reshape(4, 3, 6, 8, 8)
    x = torch.randint(0, 256, (3, 3, 8, 8), generator=generator) / 255.0
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    with torch.no_grad():
        expected = likelihood.log_prob(raw, x)
        overwritten = raw.clone()
        torch.testing.assert_close(likelihood.log_prob_(overwritten, x), expected, rtol=1e-6, atol=1e-3)
    assert not torch.equal(overwritten, raw)  # its buffers were the outputs'
    with_graph = raw.clone().requires_grad_()
    scored = likelihood.log_prob_(with_graph, x)
    assert scored.grad_fn is not None and torch.equal(with_graph.detach(), raw)
    torch.testing.assert_close(scored.detach(), expected, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("samples, images", [(2, 1), (1, 2)])
def test_the_log_mass_of_raw_outputs_passes_finite_difference_checks_to_second_order(
    generator, samples, images
):
    """The bins broadcast over the outputs' samples, or the outputs over the bins' images (their
    gradients summed back to the outputs' shape)."""
    outputs = LogisticOutputs(True, 0.5, (-7.0, 7.0))
    raw = torch.rand((samples, 2, 1, 2, 2, 1), generator=generator, dtype=torch.float64)
    raw = (raw * 4 - 2).requires_grad_()
    levels = torch.tensor([[0.0, 1.0], [0.6, 0.3]], dtype=torch.float64)
    upper, lower = bin_edges(torch.stack([levels, levels.flip(0)])[:images].reshape(images, 1, 2, 2))

    def function(r):
        return log_mass_of_outputs(r, upper, lower, outputs)

    assert torch.autograd.gradcheck(function, (raw,))
    assert torch.autograd.gradgradcheck(function, (raw,))


@pytest.mark.parametrize("initial_std", [0.2, None])
def test_the_likelihood_takes_one_components_outputs_whole_with_the_same_values_and_gradients(
    generator, initial_std
):
    """The ELBO's and AIS's path (a graph, one component) against the likelihood's general one, for 4
    samples of 2 images."""
    likelihood = DiscretizedLogisticLikelihood(
        initial_std=initial_std, bounded=True, one_component_weight=False
    )
    output = (torch.randn((4, 2, 6, 8, 8), generator=generator) * 2).requires_grad_()
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=generator) / 255
    weights = torch.rand(4, 2, generator=generator)
    got = likelihood.log_prob(output, x)
    assert got.grad_fn is not None and got.shape == (4, 2)
    expected = discretized_logistic_log_prob(*likelihood._parameters(output), x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3)
    gradient, expected_gradient = (
        torch.autograd.grad((weights * value).sum(), output)[0] for value in (got, expected)
    )
    # where a location saturates, 1 - tanh^2 is 1e-4 and carries float32's rounding of the tanh, either way
    torch.testing.assert_close(gradient, expected_gradient, rtol=2e-3, atol=1e-5)


def test_a_vaes_log_joint_scores_its_own_decoding_in_place_with_the_same_numbers(generator):
    """The IWAE's log p(x, z) decodes and then scores in the decoder output's buffers; with a decoder passed
    in (whose output the caller may hold) it keeps them. Both give the same numbers."""
    torch.manual_seed(0)
    likelihood = DiscretizedLogisticLikelihood(initial_std=0.2, one_component_weight=False)
    model = VariationalAutoencoder(MLP(hidden=[16]), likelihood, 3, (3, 4, 4)).eval()
    x = torch.randint(0, 256, (5, 3, 4, 4), generator=generator) / 255.0
    z = torch.randn(7, 5, 3, generator=generator) * 3
    held = []

    def decode_and_hold(codes):
        held.append(model.decode(codes))
        return held[-1]

    with torch.no_grad():
        in_place = model.log_joint(x, z)
        kept = model.log_joint(x, z, decode_and_hold)
        assert torch.equal(held[0], model.decode(z.reshape(35, 3)))
    torch.testing.assert_close(in_place, kept, rtol=1e-6, atol=1e-3)
    assert torch.isfinite(in_place).all() and in_place.shape == (7, 5)
