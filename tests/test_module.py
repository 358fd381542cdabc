"""The LightningModule's own switches (the math it wires together is tested in the objectives' tests)."""

import torch

from vaerun.module import AutoencoderModule


def tiny_module(model: str = "vaerun.autoencoders.Autoencoder") -> AutoencoderModule:
    torch.manual_seed(0)
    return AutoencoderModule(
        model={"_target_": model},
        encoder={"_target_": "vaerun.networks.MLP", "hidden": [16]},
        likelihood={"_target_": "vaerun.objectives.BernoulliLikelihood"},
        corruption={"_target_": "vaerun.corruption.NoCorruption"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        latent=2,
        image_shape=[1, 4, 4],
    )


def test_compiled_training_loss_computes_the_same_terms_and_gradients_as_the_eager_one():
    module = tiny_module()
    x = torch.rand(8, 1, 4, 4)
    eager = module.training_loss_terms(x, x)
    eager_grads = torch.autograd.grad(eager["loss"], list(module.parameters()))
    module.compile_training_loss()
    compiled = module.training_loss_terms(x, x)
    compiled_grads = torch.autograd.grad(compiled["loss"], list(module.parameters()))
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-5)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # the weights (and so checkpoints) are the plain model's: no _orig_mod prefix
    assert not any("_orig_mod" in key for key in module.state_dict())
