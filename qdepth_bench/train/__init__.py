"""Training: the depth VQ-VAE and co-training of QDepth-VLA (and its variants) from named recipes."""
