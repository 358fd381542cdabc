"""vaerun: a command-line experiment runner for autoencoders (AE, DAE, VAE)."""

__version__ = "0.1.0"
