"""model=vqvae: nearest codes, the moving-average codebook and its restarts, the straight-through
gradient, the PixelCNN code prior (a normalised, autoregressive distribution that learns a known one),
and the whole run: rate, perplexity, samples, the Python API, and the refusals."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from conftest import TINY, vae_run

import vaerun
from vaerun.core.errors import ConfigError
from vaerun.models.autoencoders import VQVAE
from vaerun.models.code_prior import CodePriorFit, GridPixelCNN
from vaerun.models.likelihoods import BernoulliLikelihood
from vaerun.models.networks import MLP, Conv
from vaerun.models.priors import VampPrior
from vaerun.models.quantization import (
    EMACodebook,
    code_counts,
    ema_codebook,
    nearest_codes,
    perplexity,
    straight_through,
)


def test_nearest_codes_are_the_argmin_of_the_distances():
    generator = torch.Generator().manual_seed(0)
    vectors, codebook = torch.randn(500, 6, generator=generator), torch.randn(40, 6, generator=generator)
    assert torch.equal(nearest_codes(vectors, codebook), torch.cdist(vectors, codebook).argmin(dim=1))


def test_without_memory_the_codebook_is_the_mean_of_each_codes_vectors():
    vectors = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0], [11.0, 13.0]])
    indices = torch.tensor([0, 0, 2, 2, 2])
    counts = code_counts(indices, 3)
    sums = torch.zeros(3, 2).index_add_(0, indices, vectors)
    codebook = ema_codebook(counts, sums, epsilon=1e-9)
    torch.testing.assert_close(codebook[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(codebook[2], torch.tensor([11.0, 11.0]))


def test_perplexity_counts_the_codes_in_use():
    assert perplexity(torch.full((16,), 5.0)).item() == pytest.approx(16.0)
    assert perplexity(torch.tensor([7.0, 0.0, 0.0])).item() == pytest.approx(1.0)


def test_the_straight_through_estimate_passes_the_gradient_unchanged():
    vectors = torch.randn(4, 3, requires_grad=True)
    quantized = torch.round(vectors.detach())
    out = straight_through(vectors, quantized)
    assert torch.equal(out, quantized)
    (gradient,) = torch.autograd.grad((out * torch.arange(3.0)).sum(), vectors)
    assert torch.equal(gradient, torch.arange(3.0).expand(4, 3))


def test_the_codebook_starts_at_batch_vectors_follows_them_and_restarts_unused_codes():
    torch.manual_seed(0)
    first = torch.randn(64, 2)
    frozen = EMACodebook(num_codes=8, dim=2, decay=1.0)  # no memory of later batches: the start stays
    frozen.update(first, frozen.quantize(first)[1])
    assert (frozen.codebook.unsqueeze(1) - first).abs().amax(dim=2).amin(dim=1).max() < 1e-6
    codebook = EMACodebook(num_codes=8, dim=2, decay=0.5, restart_below=1.0)
    codebook.update(first, codebook.quantize(first)[1])
    # every later batch sits near one point: one code takes it all, the others restart at its vectors
    cluster = torch.tensor([5.0, 5.0]) + 0.01 * torch.randn(64, 2)
    for _ in range(8):
        _, indices = codebook.quantize(cluster)
        codebook.update(cluster, indices)
    assert codebook.restarts.item() > 0
    assert torch.cdist(codebook.codebook, cluster).min(dim=1).values.max() < 0.05


def test_the_pixelcnn_is_autoregressive_and_normalised():
    torch.manual_seed(0)
    prior = GridPixelCNN(num_codes=3, grid_shape=(2, 2), channels=8, layers=2).double()
    codes = torch.randint(3, (5, 2, 2))
    logits = prior.logits(codes)
    for position in range(4):  # changing a code leaves the distributions of it and all before it alone
        changed = codes.clone().flatten(1)
        changed[:, position] = (changed[:, position] + 1) % 3
        moved = (prior.logits(changed.view_as(codes)) - logits).abs().flatten(2).amax(dim=(0, 1))
        assert moved[: position + 1].max() == 0
    grids = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, 2, 2)
    assert torch.logsumexp(prior.log_prob(grids), dim=0).item() == pytest.approx(0.0, abs=1e-9)


def test_the_fitted_prior_learns_a_distribution_of_grids_and_samples_from_it():
    # grids whose four codes are all one of {3, 7}: one bit per grid, against 4 log2 10 = 13.3 uniform
    generator = torch.Generator().manual_seed(0)
    picks = torch.tensor([3, 7])[torch.randint(2, (2000,), generator=generator)]
    grids = picks.view(-1, 1, 1).expand(-1, 2, 2).contiguous()
    prior = CodePriorFit(channels=16, layers=2, epochs=15, batch_size=100, lr=1e-2).fit(grids, 10)
    bits = -prior.log_prob(grids).mean().item() / math.log(2)
    assert bits < 1.3
    drawn = prior.sample(200, torch.Generator().manual_seed(1))
    constant = (drawn == drawn[:, :1, :1]).flatten(1).all(dim=1)
    assert constant.float().mean() > 0.95 and set(drawn.unique().tolist()) <= {3, 7}


def vqvae(**kwargs) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(Conv(channels=[8, 16]), BernoulliLikelihood(), 4, (1, 12, 12), codebook_size=16, **kwargs)


def test_the_model_codes_a_grid_decodes_through_the_codebook_and_trains_the_encoder():
    model = vqvae()
    x = torch.rand(6, 1, 12, 12)
    model.train()
    terms = model.loss_terms(x, x)
    assert set(terms) >= {"loss", "recon", "commitment", "perplexity", "codes_used", "code_restarts"}
    terms["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (6, 3 * 3 * 4) and model.code_size == 36
    is_code = (codes.view(-1, 1, 4) == model.codebook.codebook).all(dim=2)
    assert is_code.any(dim=1).all()
    nudged = codes + 1e-4  # decoding snaps to the codebook: a nearby code decodes to the same image
    torch.testing.assert_close(model.mean(nudged), model.mean(codes))
    assert model.fixed_rate_bits == pytest.approx(9 * 4.0)


def test_a_vqvae_refuses_what_it_cannot_be_built_with():
    with pytest.raises(ConfigError, match="encoder: model=vqvae needs a grid"):
        VQVAE(MLP(hidden=[8]), BernoulliLikelihood(), 4, (1, 8, 8))
    with pytest.raises(ConfigError, match="prior: model=vqvae"):
        VQVAE(Conv(channels=[8]), BernoulliLikelihood(), 4, (1, 8, 8), prior=VampPrior(pseudo_inputs=2))


def test_a_vqvae_run_reports_its_rate_samples_through_its_prior_and_loads(tmp_path):
    fast_prior = ["model.code_prior.epochs=1", "model.code_prior.max_images=500", "model.codebook_size=64"]
    vae_run("model=vqvae", "data=digits", *TINY, *fast_prior, "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["test/rate_bits"] < metrics["test/rate_bits_fixed"] == pytest.approx(16 * 6.0)
    assert metrics["test/rate_bits_se"] > 0 and metrics["time/generative_prior_fit_s"] > 0
    assert 1 <= metrics["test/perplexity"] <= 64 and 0 < metrics["test/codes_used"] <= 1
    assert (run / "images" / "sample_generated.png").exists()
    assert not (run / "images" / "sample_traversals.png").exists()  # no continuous dimensions to walk
    model = vaerun.load(run)
    images, _ = model.split("train")
    codes = model.encode(images[:200]).mean
    assert codes.shape == (200, 4 * 4 * 16)  # a 4x4 grid of 16-vectors at 8 px
    torch.testing.assert_close(model.decode(codes), model.reconstruct(images[:200]))
    drawn = model.sample(4, seed=0, codes=codes)
    assert drawn.shape == (4, 1, 8, 8) and drawn.min() >= 0 and drawn.max() <= 1


def test_vqvae_with_an_mlp_encoder_is_one_line(tmp_path):
    result = vae_run("model=vqvae", "encoder=mlp", "data=digits", *TINY, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vae-run: error: encoder: model=vqvae needs a grid of codes: use encoder=conv or encoder=resnet"
    ]
