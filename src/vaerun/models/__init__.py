"""The math and the networks: autoencoders, their encoders and decoders, likelihoods, priors, posteriors,
MCMC, corruptions. Pure torch: no Lightning, no files."""
