"""The torch-free command line: ``vae-run`` and ``vae-run-summary``, the run directory's state."""
