"""The importance-weighted autoencoder: the VAE's networks trained on the IWAE bound instead of the ELBO."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from vaerun.core.checks import ConfigError, check_value
from vaerun.models.autoencoders.variational import VariationalAutoencoder
from vaerun.models.likelihoods import squared_error
from vaerun.models.objectives import iwae_bound, iwae_surrogate


def require_the_plain_bound(model: VariationalAutoencoder, name: str, warmup_allowed: bool = False) -> None:
    """A model trained on the IWAE bound as it is: a Gaussian q, and none of the ELBO's modifications (but
    the KL warm-up where ``warmup_allowed``)."""
    if model.posterior_is_flow or model.posterior_family.is_chain:
        raise ConfigError(f"model={name}: the posterior must be posterior=gaussian")
    changed = {
        "beta": model.beta != 1.0,
        "kl_warmup_epochs": model.kl_warmup_epochs != 0 and not warmup_allowed,
        "free_bits": model.free_bits != 0,
        "estimator": model.estimator != "reparam",
    }
    for key, is_changed in changed.items():
        if is_changed:
            raise ConfigError(f"model.{key}: model={name} trains the IWAE bound itself; leave {key} unset")


class ImportanceWeightedAutoencoder(VariationalAutoencoder):
    """Burda et al. (2016): the loss is minus the IWAE bound log (1/k) sum_i p(x, z_i) / q(z_i | x) with k
    samples of q per image, a tighter bound on log p(x) than the ELBO (k = 1 is the ELBO, at a sample). The
    encoder's gradient is the bound's reparameterisation gradient, or with ``gradient="dreg"`` the doubly
    reparameterised one (Tucker et al. 2019), whose signal-to-noise does not fall as k grows.
    ``bound="elbo"`` trains the ELBO estimated with the same k samples instead (Burda et al.'s "VAE, k").

    What is logged beside the loss: ``iwae_bound`` (the bound, nats per image), ``elbo`` (the mean of the
    k log-weights: the ELBO at these samples), ``recon`` and ``kl`` (their two parts, sample means), ``mse``
    (of the first sample's reconstruction). Evaluation (test/nll_iwae with eval.iwae_samples) is the VAE's.
    The posterior is the Gaussian; beta, the KL warm-up, free bits and REINFORCE belong to the ELBO."""

    def __init__(self, *args, k: int = 5, gradient: str = "reparam", bound: str = "iwae", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_value("model.gradient", gradient)
        check_value("model.k", k)
        check_value("model.bound", bound)
        if bound == "elbo" and gradient == "dreg":
            raise ConfigError(
                "model.gradient: dreg is a gradient of the IWAE bound; with model.bound=elbo use reparam"
            )
        require_the_plain_bound(self, "iwae")
        self.k, self.gradient, self.bound = k, gradient, bound

    def objective(
        self, x_in: Tensor, target: Tensor, decode: Callable[[Tensor], Tensor]
    ) -> tuple[dict[str, Tensor], Tensor]:
        mu, logvar, _ = self._encoded(x_in)
        parts: dict[str, Tensor] = {}

        def log_joint(z: Tensor) -> Tensor:  # log p(x, z) of samples (k, N, K), one decoder pass
            output = decode(z.reshape(-1, z.shape[-1]))
            output = output.reshape(*z.shape[:2], *output.shape[1:])
            parts["log_likelihood"], parts["output"] = self.likelihood.log_prob(output, target), output[0]
            return parts["log_likelihood"] + self.prior.log_prob(z)

        # the estimator matters only for a gradient: evaluation takes the plain bound
        gradient = self.gradient if self.training else "reparam"
        objective, log_weights, z = iwae_surrogate(log_joint, mu, logvar, self.k, gradient, self.bound)
        log_likelihood, log_weights = parts["log_likelihood"].detach(), log_weights.detach()
        terms = {
            "loss": -objective.mean(),
            "iwae_bound": iwae_bound(log_weights).mean(),
            "elbo": log_weights.mean(),
            "recon": -log_likelihood.mean(),
            "kl": (log_likelihood - log_weights).mean(),
            "mse": squared_error(self.likelihood.mean(parts["output"].detach()), target).mean(),
        }
        return terms, z[0].detach()
