"""A trained model from Python (``vaerun.load``), without Lightning."""
