"""Training: loss (``loss``), optimizer (``optim``), the compiled train step (``step``), trainable sets and
precision (``trainable``), checkpoints (``checkpoint``), EMA (``ema``), parallel setup (``parallel``),
logs (``log``) and the loop (``trainer``)."""
