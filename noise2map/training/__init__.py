"""One training/evaluation loop for Noise2Map and every baseline, and the pretraining stage."""
