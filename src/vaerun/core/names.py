"""Names that several layers share, defined once; the modules that own the things they name test that they
agree (the stages' steps, the MCMC kernels). Pure Python: the config checks read them before torch loads."""

from __future__ import annotations

#: the values of ``stage`` (vaerun.stages.pipeline.STAGE_STEPS runs each)
STAGES = ("all", "train", "eval", "sample", "impute", "anomaly")
#: the MCMC kernels (vaerun.models.mcmc.KERNELS)
KERNEL_NAMES = ("hmc", "mala", "rwmh")
#: the VAE's gradient estimators: reparam (z = mu + sigma * eps) or reinforce (the score function)
ESTIMATORS = ("reparam", "reinforce")
#: the IWAE objective's encoder gradients: reparam (of the bound) or dreg (doubly reparameterised)
IWAE_GRADIENTS = ("reparam", "dreg")
#: hydra/sweeper=optuna's samplers, pruners and directions
SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("median", "hyperband")
DIRECTIONS = ("minimize", "maximize")
#: what a model on k samples per image trains: the IWAE bound, or the ELBO estimated with the k samples
BOUNDS = ("iwae", "elbo")
#: data.binarize: grey levels, a Bernoulli re-sample per draw, or one fixed sample
BINARIZATIONS = ("none", "dynamic", "static")

#: models with no prior p(z): a prior other than the default is a mistake with them
DETERMINISTIC_MODELS = ("vaerun.models.autoencoders.Autoencoder",)
DEFAULT_PRIOR = "vaerun.models.priors.GaussianPrior"
DEFAULT_POSTERIOR = "vaerun.models.posteriors.Gaussian"
