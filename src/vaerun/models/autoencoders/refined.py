"""The MCMC-refined VAE: the decoder learns at codes that MCMC moved from q's sample toward p(z|x)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call

from vaerun.core.checks import check_value
from vaerun.models.autoencoders.variational import VariationalAutoencoder
from vaerun.models.mcmc import KERNELS, run_chains
from vaerun.models.networks import running_statistics


class MCMCRefinedVAE(VariationalAutoencoder):
    """A VAE whose decoder learns from codes refined by MCMC (Hoffman 2017; cf. MetVAE, Thin et al. 2020).

    By Fisher's identity, grad_theta log p(x) = E_p(z|x)[grad_theta log p(x, z)]: the decoder's gradient is
    exact at samples of the true posterior, which the ELBO replaces by q. Here ``mcmc_steps`` transitions
    of ``mcmc_kernel`` (hmc, mala or rwmh: vaerun.models.mcmc.KERNELS) targeting p(z|x) ~ p(x|z) p(z)
    start from q's sample, and the decoder is trained to
    maximise log p(x|z) at the refined codes; the encoder keeps its ELBO, computed with the decoder's
    weights held fixed. The step size adapts toward ``target_accept`` (None: the kernel's own rate) from
    batch to batch. The training
    loss is the sum of the two objectives; evaluation scores the plain ELBO, like any VAE. The chains read
    the decoder's batch norms (if any) at their running statistics, so that each chain's target is its own."""

    def __init__(
        self,
        *args,
        mcmc_steps: int = 5,
        leapfrog_steps: int = 5,
        step_size: float = 0.05,
        target_accept: float | None = None,
        mcmc_kernel: str = "hmc",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_value("model.mcmc_kernel", mcmc_kernel)
        self.mcmc_steps, self.leapfrog_steps = int(mcmc_steps), int(leapfrog_steps)
        self.kernel, kernel_accept = KERNELS[mcmc_kernel]
        self.target_accept = float(target_accept) if target_accept is not None else kernel_accept
        self.register_buffer("mcmc_step_size", torch.tensor(float(step_size)))  # saved: a resume continues it

    def loss_terms(self, x_in: Tensor, target: Tensor) -> dict[str, Tensor]:
        if not self.training or self.mcmc_steps == 0:
            return super().loss_terms(x_in, target)
        fixed = {name: value.detach() for name, value in self.decoder.state_dict(keep_vars=True).items()}
        terms, z_q = self.objective(x_in, target, lambda z: functional_call(self.decoder, fixed, (z,)))

        log_joint = self.posterior_log_density(target)
        z_q = z_q.detach()
        with running_statistics(self.decoder):
            z, step_size, acceptance = run_chains(
                z_q,
                log_joint,
                self.mcmc_steps,
                self.mcmc_step_size,
                self.leapfrog_steps,
                self.target_accept,
                kernel=self.kernel,
            )
        self.mcmc_step_size.copy_(step_size)
        refined = log_joint(z)  # the decoder's gradient: the prior term carries none
        with torch.no_grad():
            # log p(x, z_q) from the encoder's terms (its log p(x|z_q) is -recon), not one more decoder pass
            gain = refined.mean() + terms["recon"] - self.prior.log_prob(z_q).mean()
        terms["loss"] = terms["loss"] - refined.mean()
        terms["mcmc_accept"] = acceptance.mean()
        terms["mcmc_log_joint_gain"] = gain  # how much the chains raised log p(x, z) over q's sample
        terms["mcmc_step_size"] = self.mcmc_step_size.clone()
        return terms
