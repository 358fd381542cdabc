"""The discretized logistic's fused kernels (vaerun.models.fused_bins, what compile=true scores through):
the eager steps' values, gradients and second derivatives, and the same estimates from a model. Each
kernel compiles once per process with symbolic sizes; the tests keep to one kind of outputs so that they
share what they compile."""

import pytest
import torch

from vaerun.models.fused_bins import (
    bin_width_terms,
    fused_log_prob_of_outputs,
    fused_log_prob_of_outputs_value,
)
from vaerun.models.likelihoods import DiscretizedLogisticLikelihood
from vaerun.models.logistic_bins import OPEN_EDGE, bin_edges, log_mass
from vaerun.models.objectives import sum_pixels
from vaerun.training.module import AutoencoderModule

pytestmark = pytest.mark.long  # torch.compile's first call takes seconds

#: the likelihood's, as the configs start it (bounded locations, initial_std 0.2)
OUTPUTS = DiscretizedLogisticLikelihood(initial_std=0.2, bounded=True, one_component_weight=False).outputs


def _outputs_and_bins(generator, dtype, samples=3, images=2):
    """Raw outputs (samples, images, 2, 3, 8, 8, 1), locations before the tanh over most of its range,
    log-scales from far below to far above the clamp's range; the bins of 8-bit images with both edges."""
    raw = torch.rand((samples, images, 2, 3, 8, 8, 1), generator=generator, dtype=dtype)
    raw[:, :, 0] = raw[:, :, 0] * 6 - 3
    raw[:, :, 1] = raw[:, :, 1] * 20 - 10
    x = torch.randint(0, 256, (images, 3, 8, 8), generator=generator).to(dtype) / 255
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    upper, lower = bin_edges(x)
    assert upper[0, 0, 1, 0] == OPEN_EDGE and lower[0, 0, 0, 0] == -OPEN_EDGE
    return raw.requires_grad_(), upper, lower


def _plain_log_prob(raw, upper, lower):
    """log p(x | outputs) per image in autograd's plain steps."""
    return sum_pixels(log_mass(*OUTPUTS.started(*raw.unbind(-5)), upper, lower).squeeze(-1))


def test_the_fused_log_probabilities_and_gradients_are_the_plain_steps(generator):
    """In float64: the values, and the gradients on the raw outputs through the tanh and the clamp (0
    beyond it), as autograd takes them through the plain steps, the images broadcast over the samples."""
    raw, upper, lower = _outputs_and_bins(generator, torch.float64)
    weights = torch.rand((3, 2), generator=generator, dtype=torch.float64)
    expected = _plain_log_prob(raw, upper, lower)
    got = fused_log_prob_of_outputs(raw, upper, lower, OUTPUTS)
    assert got.shape == (3, 2)
    torch.testing.assert_close(got, expected)
    expected_gradient = torch.autograd.grad((weights * expected).sum(), raw)[0]
    gradient = torch.autograd.grad((weights * got).sum(), raw)[0]
    # sigmoid(-plus) is 1 - sigmoid(|plus|) for plus > 0: float64's rounding of 1, times the scale
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-6, atol=1e-9)
    assert (gradient[:, :, 1] == 0).any() and gradient.is_contiguous()  # clamped log-scales among them


def test_the_fused_log_probabilities_alone_in_float32_are_the_plain_steps_in_float64(generator):
    """The IWAE's kernel: float32 outputs, left as they were, against float64's plain steps."""
    raw, upper, lower = _outputs_and_bins(generator, torch.float64)
    expected = _plain_log_prob(raw, upper, lower).detach()
    outputs = raw.detach().float()
    with torch.no_grad():
        got = fused_log_prob_of_outputs_value(outputs, upper.float(), lower.float(), OUTPUTS)
    assert got.dtype == torch.float32 and torch.equal(outputs, raw.detach().float())
    # float32's rounding of a location, over a scale of e^-7, is about 1e-4 of plus and minus: summed
    # over an image's 192 sub-pixels, about 1e-4 of its log-probability of -1,000 to -2,000 nats
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=0.05)


@pytest.mark.parametrize("raw_images", [2, 1], ids=["samples-of-each-image", "one-output-for-both-images"])
def test_the_fused_gradient_passes_finite_difference_checks_to_second_order(generator, raw_images):
    """gradcheck for the kernel's gradients; gradgradcheck for a gradient of that gradient (the Hamiltonian
    posterior's training), which goes through the plain steps. The bins broadcast over the outputs'
    samples, or the outputs over the bins' images (their gradients summed back to the outputs' shape)."""
    raw, upper, lower = _outputs_and_bins(generator, torch.float64, samples=2)
    raw = raw.detach()[:, :raw_images, :, :, :2, :2].contiguous().requires_grad_()
    upper, lower = upper[:, :, :2, :2], lower[:, :, :2, :2]

    def function(r):
        return fused_log_prob_of_outputs(r, upper, lower, OUTPUTS)

    assert torch.autograd.gradcheck(function, (raw,))
    assert torch.autograd.gradgradcheck(function, (raw,))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fused_kernels_give_a_models_iwae_and_ais_estimates_unchanged(generator, device):
    """What compile=true does for evaluation (AutoencoderModule.fuse_likelihood_kernels): the IWAE's
    log p(x, z), scored without a graph, and AIS's gradients, through the kernels, to float rounding; a
    likelihood without kernels is left as it is. On a GPU torch.compile writes them in Triton."""
    hparams = {
        "model": {"_target_": "vaerun.models.autoencoders.VariationalAutoencoder"},
        "encoder": {"_target_": "vaerun.models.networks.MLP", "hidden": [16]},
        "likelihood": {"_target_": "vaerun.models.likelihoods.BernoulliLikelihood"},
        "corruption": {"_target_": "vaerun.models.corruption.NoCorruption"},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
        "latent": 3,
        "image_shape": [3, 8, 8],
        "prior": {"_target_": "vaerun.models.priors.GaussianPrior"},
    }
    AutoencoderModule(**hparams).fuse_likelihood_kernels()  # nothing to fuse: nothing done
    torch.manual_seed(0)
    logistic = {"initial_std": 0.2, "bounded": True, "one_component_weight": False}
    likelihood = {"_target_": "vaerun.models.likelihoods.DiscretizedLogisticLikelihood", **logistic}
    module = AutoencoderModule(**{**hparams, "likelihood": likelihood})
    model = module.model.to(device).eval()
    x = (torch.randint(0, 256, (5, 3, 8, 8), generator=generator) / 255.0).to(device)

    def estimates() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)
        with torch.no_grad():
            iwae = model.log_likelihood(x, x, 20, 10)
        torch.manual_seed(2)
        ais, _ = model.annealed_log_likelihood(x, x, chains=4, temperatures=3)
        return iwae, ais

    eager = estimates()
    module.fuse_likelihood_kernels()
    assert model.likelihood.fused_kernels
    fused = estimates()
    for got, expected in zip(fused, eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-2)  # log-likelihoods of about -130


def test_compile_true_builds_a_module_that_scores_through_the_fused_kernels():
    """vae-run's assembly for every stage: with compile=true the likelihood's kernels are fused, as the
    training loss is compiled (each at its first call); without, neither."""
    import vaerun
    from vaerun.stages.assembly import build_module
    from vaerun.training.step_groups import StepGroups

    for compiled in (True, False):
        cfg = vaerun.compose([f"compile={str(compiled).lower()}", "likelihood=discretized_logistic"])
        module = build_module(cfg, {}, set(), None, StepGroups())
        assert module.model.likelihood.fused_kernels == compiled
        assert (module.training_loss_terms == module.model.loss_terms) != compiled  # bound methods


def test_the_bin_width_terms_are_expm1s_in_float32_on_both_sides_of_the_series_limit():
    """1 - e^s and e^s for s from -1e-7 to the open edges' -1e9 (through the series' limit), in float32,
    against float64's expm1 and exp of the same float32 numbers: within a few of float32's roundings."""
    separations = torch.cat([torch.logspace(-7, 9, 4001), torch.tensor([0.5, 0.4999999])]).double()
    width, exponential = bin_width_terms(-separations.float())
    torch.testing.assert_close(width.double(), -torch.expm1(-separations), rtol=3e-7, atol=0)
    torch.testing.assert_close(exponential.double(), torch.exp(-separations), rtol=3e-7, atol=1e-30)
