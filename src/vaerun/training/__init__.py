"""The training runtime: the LightningModule, groups of steps, CUDA graphs, guards, callbacks, trackers
and the pictures they log."""
