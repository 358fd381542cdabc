"""The discretized logistic (vaerun.models.likelihoods, vaerun.models.logistic_bins) against an independent
writing of PixelCNN++'s loss, coupling included, and the levels' own sums; its gradients, its start and its
mean."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import shipped_option

from vaerun.models.likelihoods import DiscretizedLogisticLikelihood
from vaerun.models.logistic_mixture import discretized_logistic_log_prob


@pytest.mark.parametrize("mixtures", [1, 3])
def test_the_discretized_logistic_sums_to_one_over_the_256_levels(generator, mixtures):
    levels = (torch.arange(256) / 255.0).reshape(256, 1, 1, 1)  # one 1 x 1 x 1 image per level
    for _ in range(20):  # random weights, locations across [-1.5, 1.5], log-scales from a level to wide
        weights = torch.randn(1, 1, 1, mixtures, generator=generator)
        locations = torch.rand(1, 1, 1, mixtures, generator=generator) * 3 - 1.5
        log_scales = torch.rand(1, 1, 1, mixtures, generator=generator) * 6 - 6
        log_p = discretized_logistic_log_prob(weights, locations, log_scales, levels)
        assert log_p.shape == (256,)
        torch.testing.assert_close(torch.logsumexp(log_p, dim=0), torch.tensor(0.0), atol=1e-4, rtol=0)


def pixelcnn_pp_log_prob(logit_probs, means, log_scales, x):
    """PixelCNN++'s discretize_mixed_logistic_loss (Salimans et al. 2017, openai/pixel-cnn nn.py), without
    its coupling of the channels, written out independently: x in [-1, 1] on 256 levels, parameters
    (N, C, H, W, K); the per-image log-probability, and per image whether any component took PixelCNN++'s
    approximation (the density at the bin's centre times its width, where the sigmoids' difference is
    under 1e-5)."""
    x = x.unsqueeze(-1)
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered + 1.0 / 255.0)
    min_in = inv_stdv * (centered - 1.0 / 255.0)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    mid_in = inv_stdv * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    approximated = (cdf_delta <= 1e-5) & (x >= -0.999) & (x <= 0.999)
    inner = torch.where(
        cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-12)), log_pdf_mid - math.log(127.5)
    )
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))
    mixed = torch.logsumexp(log_probs + torch.log_softmax(logit_probs, dim=-1), dim=-1)
    return mixed.flatten(1).sum(dim=1), approximated.flatten(1).any(dim=1)


def one_sub_pixel_per_image(generator, count, mixtures, log_scale_range=(-6.5, -0.5)):
    """Random parameters (count, 1, 1, 1, K) and levels: each image is one sub-pixel, so per-image values
    are per-sub-pixel ones. Locations across [-1.1, 1.1], scales from much narrower than a level."""
    shape = (count, 1, 1, 1, mixtures)
    low, high = log_scale_range
    weights = torch.randn(shape, generator=generator)
    locations = torch.rand(shape, generator=generator) * 2.2 - 1.1
    log_scales = torch.rand(shape, generator=generator) * (high - low) + low
    x = torch.randint(0, 256, shape[:4], generator=generator) / 255.0
    return weights, locations, log_scales, x


@pytest.mark.parametrize("mixtures", [1, 5])
def test_the_discretized_logistic_is_pixelcnn_pps_loss_where_that_is_exact(generator, mixtures):
    """In float64, where PixelCNN++'s subtraction of two sigmoids near 1 keeps its digits (in float32 it
    loses up to 1e-3 of a small bin's log-mass there)."""
    parameters = one_sub_pixel_per_image(generator, 3000, mixtures, (-4.0, -0.5))
    in_float64 = [p.double() for p in parameters[:3]]
    expected, approximated = pixelcnn_pp_log_prob(*in_float64, parameters[3] * 2 - 1)
    got = discretized_logistic_log_prob(*parameters)
    assert approximated.any() and (~approximated).sum() > 300  # both of PixelCNN++'s branches are tried
    torch.testing.assert_close(got[~approximated].double(), expected[~approximated], rtol=1e-5, atol=2e-5)


def test_the_discretized_logistic_is_exact_in_the_tails_where_pixelcnn_pp_approximates(generator):
    """Against the bins' log-masses in float64 by another route: log sigmoid(plus) + log(1 - exp(log
    sigmoid(minus) - log sigmoid(plus))), the edges' tails as they are."""
    weights, locations, log_scales, x = one_sub_pixel_per_image(generator, 3000, 1, (-5.5, 0.0))
    _, approximated = pixelcnn_pp_log_prob(weights, locations, log_scales, x * 2 - 1)
    assert approximated.sum() > 300  # many bins far out in a narrow logistic's tail
    centred = (x.double() * 2 - 1).unsqueeze(-1) - locations.double()
    inverse_scale = torch.exp(-log_scales.double())
    plus, minus = inverse_scale * (centred + 1 / 255), inverse_scale * (centred - 1 / 255)
    inner = F.logsigmoid(plus) + torch.log(-torch.expm1(F.logsigmoid(minus) - F.logsigmoid(plus)))
    level = x.double().unsqueeze(-1)
    exact = torch.where(level == 0, F.logsigmoid(plus), torch.where(level == 1, F.logsigmoid(-minus), inner))
    got = discretized_logistic_log_prob(weights, locations, log_scales, x)
    torch.testing.assert_close(got.double(), exact.flatten(), rtol=1e-5, atol=1e-4)
    # where PixelCNN++ takes the density at the bin's centre x its width, it is off by up to 0.15 nats here
    pixelcnn, _ = pixelcnn_pp_log_prob(weights, locations, log_scales, x * 2 - 1)
    assert (pixelcnn - exact.flatten()).abs()[approximated].max() > 0.1


def pixelcnn_pp_coupled_log_prob(raw, x):
    """PixelCNN++'s discretize_mixed_logistic_loss as published (openai/pixel-cnn nn.py), its coupling of
    the channels included, written out independently in its own layout: x (B, H, W, 3) in [-1, 1], raw (B, H,
    W, 10 K) channels last: K weights, then per channel K means, K log-scales and K coefficients (green on
    red in red's, blue on red in green's, blue on green in blue's). The per-image log-probability, and per
    image whether any sub-pixel took PixelCNN++'s approximation."""
    k = raw.shape[-1] // 10
    logit_probs, rest = raw[..., :k], raw[..., k:].reshape(*x.shape, 3 * k)
    means, log_scales = rest[..., :k], torch.clamp(rest[..., k : 2 * k], min=-7.0)
    coeffs = torch.tanh(rest[..., 2 * k : 3 * k])
    x = x.unsqueeze(-1).expand(*x.shape, k)
    green = means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]
    blue = means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]
    centered = x - torch.stack([means[..., 0, :], green, blue], dim=-2)
    inv_stdv = torch.exp(-log_scales)
    plus_in, min_in = inv_stdv * (centered + 1.0 / 255.0), inv_stdv * (centered - 1.0 / 255.0)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_stdv * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    inner = torch.where(
        cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-12)), log_pdf_mid - math.log(127.5)
    )
    edges = torch.where(x > 0.999, -F.softplus(min_in), inner)
    log_probs = torch.where(x < -0.999, plus_in - F.softplus(plus_in), edges)
    mixed = torch.logsumexp(log_probs.sum(dim=3) + torch.log_softmax(logit_probs, dim=-1), dim=-1)
    approximated = (cdf_delta <= 1e-5) & (x >= -0.999) & (x <= 0.999)
    return mixed.flatten(1).sum(dim=1), approximated.flatten(1).any(dim=1)


@pytest.mark.parametrize("mixtures", [1, 5])
def test_the_coupled_discretized_logistic_is_pixelcnn_pps_loss_where_that_is_exact(generator, mixtures):
    """``channel_coupling``: PixelCNN++'s own likelihood, read from a decoder output in vaerun's layout (the
    same numbers as PixelCNN++'s, rearranged), in float64 on 1 x 1 colour images."""
    count, k = 3000, mixtures
    raw = torch.randn(count, 1, 1, 10 * k, generator=generator, dtype=torch.float64)
    rest = raw[..., k:].reshape(count, 1, 1, 3, 3 * k)
    rest[..., :k] = torch.rand(count, 1, 1, 3, k, generator=generator, dtype=torch.float64) * 2.2 - 1.1
    rest[..., k : 2 * k] = torch.rand(count, 1, 1, 3, k, generator=generator, dtype=torch.float64) * 2 - 2.5
    rest[..., 2 * k :] *= 0.5  # coefficients tanh(+-1) at most
    raw = torch.cat([raw[..., :k], rest.flatten(-2)], dim=-1)
    x = torch.randint(0, 256, (count, 1, 1, 3), generator=generator) / 255.0
    expected, approximated = pixelcnn_pp_coupled_log_prob(raw, x.double() * 2 - 1)
    # vaerun's layout: the weights, every channel's locations, every channel's log-scales, the coefficients
    parts = [rest[..., part * k : (part + 1) * k].flatten(-2) for part in range(3)]
    output = torch.cat([raw[..., :k], *parts], dim=-1).permute(0, 3, 1, 2)
    likelihood = DiscretizedLogisticLikelihood(mixtures=k, channel_coupling=True)
    assert likelihood.output_channels(3) == 10 * k == output.shape[1]
    got = likelihood.log_prob(output, x.permute(0, 3, 1, 2).double())
    assert approximated.any() and (~approximated).sum() > 300  # both of PixelCNN++'s branches are tried
    torch.testing.assert_close(got[~approximated], expected[~approximated], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mixtures", [1, 3])
def test_the_coupled_discretized_logistic_sums_to_one_and_its_mean_is_its_expectation(generator, mixtures):
    """On a two-channel pixel, over all 65,536 pairs of levels: the probabilities sum to one, and ``mean`` is
    each channel's expected level (to the tails folded onto the edge levels, which it leaves out: the
    locations here lie well inside the range)."""
    likelihood = DiscretizedLogisticLikelihood(mixtures=mixtures, channel_coupling=True, initial_std=0.02)
    levels = torch.arange(256, dtype=torch.float64) / 255
    pairs = torch.cartesian_prod(levels, levels).reshape(-1, 2, 1, 1)
    for _ in range(3):
        output = torch.randn(1, likelihood.output_channels(2), 1, 1, generator=generator, dtype=torch.float64)
        output = output * 0.2  # locations within about +-0.7, logistics' standard deviations near 0.02
        probabilities = likelihood.log_prob(output, pairs).exp()
        torch.testing.assert_close(
            probabilities.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0
        )
        expected = (probabilities.reshape(-1, 1) * pairs.reshape(-1, 2)).sum(dim=0)
        torch.testing.assert_close(likelihood.mean(output).flatten(), expected, atol=1e-4, rtol=0)


def test_the_discretized_logistics_gradients_are_the_exact_ones_at_the_edge_levels_too(generator):
    """The edge levels' bins end at +-OPEN_EDGE rather than infinity, so that their gradients are 0 and not
    0 x inf: the gradients equal float64 autograd of the exact log-masses (the tails written as such), for
    logistics from far narrower than a level to wider than the range, at every level, 0 and 255 included."""
    weights, locations, log_scales, x = one_sub_pixel_per_image(generator, 3000, 1, (-7.0, 7.0))
    x[:100], x[100:200] = 0.0, 1.0
    parameters = [locations.clone().requires_grad_(True), log_scales.clone().requires_grad_(True)]
    discretized_logistic_log_prob(weights, *parameters, x).sum().backward()
    exact_parameters = [locations.double().requires_grad_(True), log_scales.double().requires_grad_(True)]
    centred = (x.double() * 2 - 1).unsqueeze(-1) - exact_parameters[0]
    inverse_scale = torch.exp(-exact_parameters[1])
    plus, minus = inverse_scale * (centred + 1 / 255), inverse_scale * (centred - 1 / 255)
    level = x.double().unsqueeze(-1)
    bottom, top = level == 0, level == 1
    # each kind of bin on its own elements (a where's other branch would back-propagate nan), the bins
    # right of the location mirrored, so that both sigmoids' logs keep their digits in float64
    left = ~(bottom | top) & (plus + minus <= 0)
    right = ~(bottom | top) & (plus + minus > 0)
    high, low = F.logsigmoid(plus[left]), F.logsigmoid(minus[left])
    high_mirrored, low_mirrored = F.logsigmoid(-minus[right]), F.logsigmoid(-plus[right])
    inner = high + torch.log(-torch.expm1(low - high))
    inner_mirrored = high_mirrored + torch.log(-torch.expm1(low_mirrored - high_mirrored))
    tails = F.logsigmoid(plus[bottom]).sum() + F.logsigmoid(-minus[top]).sum()
    (tails + inner.sum() + inner_mirrored.sum()).backward()
    for got, expected in zip(parameters, exact_parameters, strict=True):
        assert torch.isfinite(got.grad).all()
        torch.testing.assert_close(got.grad.double(), expected.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mixtures", [1, 3])
def test_the_discretized_logistics_in_place_path_without_gradients_equals_the_graph_path(generator, mixtures):
    """IWAE scores without gradients, through buffers overwritten in place: the same log-probabilities,
    the edge levels and logistics narrower than a level included."""
    shape = (5, 4, 3, 8, 8, mixtures)
    weights = torch.randn(shape, generator=generator)
    locations = torch.rand(shape, generator=generator) * 2 - 1
    log_scales = torch.rand(shape, generator=generator) * 9 - 8  # far narrower than a level to wider than all
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=generator) / 255.0
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    with torch.no_grad():
        in_place = discretized_logistic_log_prob(weights, locations, log_scales, x)
    log_scales.requires_grad_(True)
    with_graph = discretized_logistic_log_prob(weights, locations, log_scales, x)
    torch.testing.assert_close(in_place, with_graph.detach(), rtol=1e-6, atol=1e-2)
    assert with_graph.grad_fn is not None


def test_a_faithful_logistic_keeps_its_values_and_scales_each_sub_pixels_gradient_by_its_variance(generator):
    """``faithful``: the same log-probabilities; each location's and log-scale's gradient is the plain one
    times its logistic's variance over the batch's mean variance (beta-NLL, beta = 1): one number for every
    image."""
    output = torch.randn(4, 6, 5, 5, generator=generator)
    x = torch.randint(0, 256, (4, 3, 5, 5), generator=generator) / 255.0
    gradients, values = [], []
    for faithful in (False, True):
        leaf = output.clone().requires_grad_(True)
        likelihood = DiscretizedLogisticLikelihood(initial_std=0.2, bounded=True, one_component_weight=False,
                                                   faithful=faithful)  # fmt: skip
        value = likelihood.log_prob(leaf, x)
        value.sum().backward()
        values.append(value.detach())
        gradients.append(leaf.grad)
    torch.testing.assert_close(values[1], values[0])
    _, _, log_scales = DiscretizedLogisticLikelihood(initial_std=0.2, one_component_weight=False)._parameters(
        output
    )
    variance = torch.exp(2 * log_scales.squeeze(-1))
    weight = variance / variance.mean()
    torch.testing.assert_close(gradients[1], gradients[0] * weight.repeat(1, 2, 1, 1))
    with torch.no_grad():  # no graph: the values alone
        faithful, plain = (
            DiscretizedLogisticLikelihood(one_component_weight=False, faithful=f) for f in (True, False)
        )
        torch.testing.assert_close(faithful.log_prob(output, x), plain.log_prob(output, x))
    with pytest.raises(ValueError, match=r"likelihood.faithful=true: one logistic per sub-pixel"):
        DiscretizedLogisticLikelihood(mixtures=2, faithful=True)


def test_the_discretized_logistic_likelihood_reads_its_parameters_from_the_decoder(generator):
    likelihood = DiscretizedLogisticLikelihood(mixtures=2)
    assert likelihood.output_channels(3) == 18
    output = torch.randn(4, 18, 2, 2, generator=generator)
    x = torch.randint(0, 256, (4, 3, 2, 2), generator=generator) / 255.0
    assert likelihood.log_prob(output, x).shape == (4,) and (likelihood.log_prob(output, x) < 0).all()
    samples = output.expand(5, *output.shape)  # IWAE's leading sample dimension broadcasts against x
    torch.testing.assert_close(likelihood.log_prob(samples, x), likelihood.log_prob(output, x).expand(5, 4))
    mean = likelihood.mean(output)
    assert mean.shape == (4, 3, 2, 2) and mean.min() >= 0 and mean.max() <= 1


def test_one_component_reads_a_location_and_a_log_scale_and_the_older_layout_ignores_its_weight(generator):
    """One component's weight is 1: the decoder outputs 2 x C channels. Checkpoints made before the key
    (whose config lacks it) output a weight too, which nothing reads: the same likelihood otherwise."""
    from hydra.utils import instantiate

    shipped = shipped_option("likelihood", "discretized_logistic")
    lean = instantiate(shipped)
    older = instantiate({k: v for k, v in shipped.items() if k != "one_component_weight"})
    assert lean.output_channels(3) == 6 and older.output_channels(3) == 9
    assert DiscretizedLogisticLikelihood(mixtures=2, one_component_weight=False).output_channels(3) == 18
    output = torch.randn(4, 6, 2, 2, generator=generator).requires_grad_(True)
    x = torch.randint(0, 256, (4, 3, 2, 2), generator=generator) / 255.0
    with_weight = torch.cat([100 * torch.randn(4, 3, 2, 2, generator=generator), output], dim=1)
    log_prob = lean.log_prob(output, x)
    torch.testing.assert_close(log_prob, older.log_prob(with_weight, x))
    torch.testing.assert_close(lean.mean(output), older.mean(with_weight))
    (gradient,) = torch.autograd.grad(log_prob.sum(), output)
    assert gradient.abs().amin(dim=(0, 2, 3)).gt(0).all()  # every location and log-scale channel learns
    with pytest.raises(ValueError, match=r"likelihood\.one_component_weight"):
        DiscretizedLogisticLikelihood(one_component_weight="no")
    with pytest.raises(ValueError, match="logit_weights"):
        discretized_logistic_log_prob(
            None, torch.zeros(1, 1, 1, 1, 2), torch.zeros(1, 1, 1, 1, 2), x[:1, :1, :1, :1]
        )


def test_bounded_locations_are_tanh_of_the_decoders_location_outputs_and_nothing_else(generator):
    """With bounded=True, the likelihood at output (w, m, s) is the unbounded one at (w, tanh(m + c), s),
    where c spreads the components' starts over [-1, 1]: the mixture's mean stays in the image range
    however far the output goes."""
    output = torch.randn(4, 18, 2, 2, generator=generator) * 3
    x = torch.randint(0, 256, (4, 3, 2, 2), generator=generator) / 255.0
    squashed = output.clone()  # channels: (weights, locations, log-scales) x 2 components x 3 colours
    squashed[:, 6:9], squashed[:, 9:12] = torch.tanh(output[:, 6:9] - 1), torch.tanh(output[:, 9:12] + 1)
    bounded = DiscretizedLogisticLikelihood(mixtures=2, initial_std=0.2, bounded=True)
    unbounded = DiscretizedLogisticLikelihood(mixtures=2, initial_std=0.2)
    torch.testing.assert_close(bounded.log_prob(output, x), unbounded.log_prob(squashed, x))
    torch.testing.assert_close(bounded.mean(output), unbounded.mean(squashed))
    with pytest.raises(ValueError, match=r"likelihood\.bounded"):
        DiscretizedLogisticLikelihood(bounded="yes")
    one = DiscretizedLogisticLikelihood(initial_std=0.2, bounded=True)  # one component starts at grey
    torch.testing.assert_close(one.mean(torch.zeros(1, 9, 2, 2)), torch.full((1, 3, 2, 2), 0.5))


def level_distribution_moments(likelihood, output):
    """Mean and standard deviation, in image units, of the distribution over the 256 levels of a one-pixel
    grey image that ``likelihood`` makes of the decoder ``output``."""
    levels = (torch.arange(256) / 255.0).reshape(256, 1, 1, 1)
    probabilities = likelihood.log_prob(output.expand(256, -1, -1, -1), levels).exp()
    mean = (probabilities * levels.flatten()).sum()
    return mean, ((probabilities * (levels.flatten() - mean).square()).sum()).sqrt()


@pytest.mark.parametrize("initial_std", [0.02, 0.05, 0.1])  # narrow enough for the tails
def test_the_discretized_logistic_starts_at_its_initial_standard_deviation(initial_std):
    likelihood = DiscretizedLogisticLikelihood(initial_std=initial_std)
    mean, std = level_distribution_moments(likelihood, torch.zeros(1, 3, 1, 1))  # a decoder's output at 0
    torch.testing.assert_close(mean, torch.tensor(0.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.tensor(initial_std), atol=2e-3, rtol=0)  # levels: 1 / 255 apart
    # without it, the raw output is the log-scale: at 0 a logistic wider than the image range
    _, raw = level_distribution_moments(DiscretizedLogisticLikelihood(), torch.zeros(1, 3, 1, 1))
    assert raw > 0.4
    with pytest.raises(ValueError, match=r"likelihood\.initial_std must be null or a number in \(0, 1\]"):
        DiscretizedLogisticLikelihood(initial_std=0.0)


def test_the_discretized_logistic_has_finite_gradients_for_extreme_decoder_outputs(generator):
    """Raw log-scales far outside [-7, 7] (a decoder fed codes far from its training data, as HMC in AIS
    proposes) are clamped: no infinite gradient of a bin's log-mass where a logistic is vastly wide."""
    likelihood = DiscretizedLogisticLikelihood(initial_std=0.1)
    output = torch.randn(4, 9, 2, 2, generator=generator) * 100
    output.requires_grad_(True)
    x = torch.randint(0, 256, (4, 3, 2, 2), generator=generator) / 255.0
    log_p = likelihood.log_prob(output, x)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(output.grad).all()
