import math

import pytest
import torch
from torch.distributions import Independent, Normal, StudentT, kl_divergence

from vaerun.models.likelihoods import (
    DENSITY,
    dequantization_nats,
)
from vaerun.models.objectives import (
    CPU_PASS_NUMBERS,
    bits_per_dim,
    cpu_pass_shape,
    free_bits_kl,
    gradient_noise,
    iwae_log_likelihood,
    kl_normal_standard_normal,
    kl_normal_standard_normal_per_dim,
    normal_log_prob_per_dim,
    reparameterize,
    score_function_surrogate,
    student_t_log_prob_per_dim,
    warmup_weight,
)


def test_kl_matches_torch_distributions(generator):
    mu = torch.randn(7, 5, generator=generator)
    logvar = torch.randn(7, 5, generator=generator)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros(5), torch.ones(5)), 1)
    torch.testing.assert_close(kl_normal_standard_normal(mu, logvar), kl_divergence(q, p))


def test_kl_is_zero_only_at_the_prior():
    assert kl_normal_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0
    assert (kl_normal_standard_normal(torch.full((2, 3), 0.1), torch.zeros(2, 3)) > 0).all()


def test_reparameterize_has_the_posterior_moments_and_passes_gradients(generator):
    mu = torch.tensor([[1.0, -2.0]]).repeat(200_000, 1).requires_grad_()
    logvar = torch.tensor([[0.0, math.log(4.0)]]).repeat(200_000, 1).requires_grad_()
    z = reparameterize(mu, logvar, generator=generator)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0]), atol=0.02, rtol=0)
    z.sum().backward()
    assert torch.all(mu.grad == 1)  # dz/dmu = 1: the gradient flows through the sample


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # a density uniform on [0, 1] (-log p = 0) is the uniform guess over 256 levels: 8 bits
    assert bits_per_dim(0.0, 784, dequantization_nats(DENSITY, False, True)) == pytest.approx(8.0)


def test_iwae_of_the_exact_posterior_is_exact_for_every_k():
    """With q(z|x) = p(z|x), every importance weight equals p(x): the estimate has no variance. In float64
    throughout: with q's scale rounded to float32, 16 of 2,000 seeds failed by 2e-7 (samples far out)."""
    prior, noise = Normal(0.0, 1.0), 0.5
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    # z ~ N(0, 1), x | z ~ N(z, noise^2): p(x) = N(0, 1 + noise^2), p(z|x) = N(x / (1 + s2), s2 / (1 + s2))
    s2 = noise**2
    scale = torch.full((3, 1), math.sqrt(s2 / (1 + s2)), dtype=torch.float64)
    posterior = Independent(Normal((x / (1 + s2))[:, None], scale), 1)

    def log_joint(z):
        return prior.log_prob(z).sum(-1) + Normal(z[..., 0], noise).log_prob(x)

    exact = Normal(0.0, math.sqrt(1 + s2)).log_prob(x)
    for k in (1, 7, 100):
        torch.testing.assert_close(iwae_log_likelihood(posterior, log_joint, k, chunk_size=3), exact)


def test_iwae_chunking_bounds_memory_and_accumulates_exactly():
    torch.manual_seed(0)
    posterior = Independent(Normal(torch.zeros(4, 2), torch.ones(4, 2)), 1)
    target = Independent(Normal(torch.full((2,), 0.5), torch.full((2,), 0.8)), 1)
    chunks = []

    def log_joint(z):
        chunks.append(z)
        return target.log_prob(z)

    chunked = iwae_log_likelihood(posterior, log_joint, 4000, chunk_size=300)
    assert max(len(z) for z in chunks) == 300 and sum(len(z) for z in chunks) == 4000
    z = torch.cat(chunks)  # the same samples in one pass: the streamed log-sum-exp must agree
    one_pass = torch.logsumexp(target.log_prob(z) - posterior.log_prob(z), dim=0) - math.log(4000)
    torch.testing.assert_close(chunked, one_pass)
    torch.testing.assert_close(chunked, torch.zeros(4), atol=0.1, rtol=0)  # log of a normalised density


def test_per_dimension_log_densities_match_torch_distributions(generator):
    z, mu, logvar = (torch.randn(5, 3, generator=generator) for _ in range(3))
    want = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z)
    torch.testing.assert_close(normal_log_prob_per_dim(z, mu, logvar), want)
    for df in (0.5, 3.0, 30.0):
        torch.testing.assert_close(student_t_log_prob_per_dim(z, df), StudentT(df).log_prob(z))


def test_free_bits_floor_each_dimension_and_stop_its_gradient_below_the_floor():
    mu = torch.tensor([[0.1, 2.0], [0.1, 2.0]], requires_grad=True)
    kl = kl_normal_standard_normal_per_dim(mu, torch.zeros(2, 2))  # 0.005 and 2.0 nats per dimension
    value = free_bits_kl(kl, free_bits=0.5)
    torch.testing.assert_close(value, torch.tensor(0.5 + 2.0))
    (grad,) = torch.autograd.grad(value, mu)
    assert torch.all(grad[:, 0] == 0) and torch.all(grad[:, 1] != 0)  # the collapsed dimension is left alone
    torch.testing.assert_close(free_bits_kl(kl, 0.0), kl.sum(-1).mean())


def test_kl_warmup_rises_linearly_from_zero_to_beta():
    assert [warmup_weight(4.0, e, 2.0) for e in (0.0, 0.5, 1.0, 2.0, 7.0)] == [0.0, 1.0, 2.0, 4.0, 4.0]
    assert warmup_weight(4.0, 0.0, 0.0) == 4.0  # no warm-up: the full weight from the first step


def test_score_function_and_reparameterisation_agree_with_the_exact_gradient():
    """E_q[-(z - c)^2] = -((mu - c)^2 + sigma^2) for q = N(mu, sigma^2): d/dmu = -2 (mu - c),
    d/dlogvar = -sigma^2. Both estimators, averaged over many samples, match it."""
    torch.manual_seed(0)
    c, n = 0.5, 200_000
    mu = torch.tensor([1.0], requires_grad=True)
    logvar = torch.tensor([-0.5], requires_grad=True)
    sigma2 = logvar.exp().item()
    exact = torch.tensor([-2 * (mu.item() - c), -sigma2])

    def f(z):
        return -(z - c).square().sum(-1)

    z = reparameterize(mu.expand(n, 1), logvar.expand(n, 1))
    pathwise = torch.autograd.grad(f(z).mean(), (mu, logvar))
    z = z.detach()
    log_q = normal_log_prob_per_dim(z, mu, logvar).sum(-1)
    baseline = f(z).mean().detach()
    score = score_function_surrogate(f(z), log_q, baseline)
    torch.testing.assert_close(score, f(z))  # the surrogate's value is f itself
    reinforce = torch.autograd.grad(score.mean(), (mu, logvar))
    for estimate in (pathwise, reinforce):
        torch.testing.assert_close(torch.cat(estimate), exact, atol=0.02, rtol=0.02)


def test_gradient_noise_is_the_trace_of_the_covariance_and_the_signal_to_noise_ratio():
    draws = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    variance, snr = gradient_noise(draws)
    torch.testing.assert_close(variance, torch.tensor(2.0 + 2.0))
    torch.testing.assert_close(snr, torch.tensor((4.0 + 1.0) / 4.0))


def test_gaussian_entropy_matches_torch_distributions():
    from vaerun.models.objectives import gaussian_entropy

    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    expected = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).entropy()
    torch.testing.assert_close(gaussian_entropy(logvar), expected)


@pytest.mark.parametrize(
    ("images", "samples", "chunk", "per_sample"),
    [(128, 100, 50, 784), (128, 100, 50, 9 * 32 * 32), (128, 100, 50, 9 * 64 * 64), (3, 5000, 50, 784)],
)
def test_cpu_passes_stay_under_their_size_and_keep_images_whole(images, samples, chunk, per_sample):
    group, samples_per_pass = cpu_pass_shape(images, samples, chunk, per_sample)
    assert 1 <= group <= images and 1 <= samples_per_pass <= min(chunk, samples)
    assert group * samples_per_pass * per_sample <= CPU_PASS_NUMBERS
    assert (group + 1) * samples_per_pass * per_sample > CPU_PASS_NUMBERS or group == images  # no smaller
