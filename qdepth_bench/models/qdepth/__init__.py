"""QDepth-VLA: configuration, attention masks, mixture-of-transformers layers, depth heads, checkpoints."""
