"""Scores of generated videos computed from network features, one measure per file: ``frechet.py`` (FVD with
I3D features, FID with InceptionV3 features), ``inception_score.py`` (per-frame Inception Score) and
``clip_scores.py`` (CLIP-I, frame consistency, CLIP-T). Pure numpy functions of feature arrays, in float64."""
