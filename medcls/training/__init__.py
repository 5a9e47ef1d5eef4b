"""Training: the epoch loop (engine), its callbacks, optimizers, class-imbalance handling, hardware settings,
and the in-memory pipeline from config to trained model (pipeline)."""
