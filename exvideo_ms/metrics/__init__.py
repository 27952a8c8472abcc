"""Scores of generated videos, one measure per file: ``fvd.py`` (I3D features of 16-frame clips), ``fid.py``
(InceptionV3 features and logits of frames; FID), ``inception_score.py`` (per-frame Inception Score),
``clip_scores.py`` (CLIP-I, frame consistency, CLIP-T), ``frechet.py`` (the Fréchet distance and reference
statistics FVD and FID share). The score arithmetic is numpy in float64; ``networks.py`` names the weights file
each network needs and loads its converted checkpoint."""
