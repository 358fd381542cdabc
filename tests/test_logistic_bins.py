"""The discretized logistic's bin log-masses (vaerun.models.logistic_bins): the in-place form and the one
with its own gradients give (1)'s values, first and second derivatives, in the far tails and at the open
edge levels too."""

import pytest
import torch

from vaerun.models.likelihoods import OPEN_EDGE
from vaerun.models.logistic_bins import fast_tanh, log_mass, log_mass_in_place, log_mass_with_own_gradients


def _bins(generator, dtype, samples=3):
    """Samples x 2 images x 3 x 8 x 8 logistics, from far narrower than a level to wider than the range,
    at locations up to several hundred scales from their bins, over 8-bit levels with both edges."""
    shape = (samples, 2, 3, 8, 8, 1)
    means = (torch.rand(shape, generator=generator, dtype=dtype) * 2.4 - 1.2).requires_grad_()
    log_scales = (torch.rand(shape, generator=generator, dtype=dtype) * 14 - 7).requires_grad_()
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=generator).to(dtype) / 255 * 2 - 1
    x[0, 0, 0], x[0, 0, 1] = -1.0, 1.0
    upper = torch.where(x > 1 - 1 / 255, OPEN_EDGE, x + 1 / 255).unsqueeze(-1)
    lower = torch.where(x < -1 + 1 / 255, -OPEN_EDGE, x - 1 / 255).unsqueeze(-1)
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
