"""The machinery every run shares: the run folder and its lifecycle, data, the synthetic stand-in,
augmentation, the lock, how a step runs (device, precision, layout, compilation), memory."""
