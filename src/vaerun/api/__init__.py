"""vaerun from Python, without Lightning: a trained model (``vaerun.load``) and the config a command would
run (``vaerun.compose``)."""
