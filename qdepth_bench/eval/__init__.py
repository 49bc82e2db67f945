"""Running evaluations: episode planning, the episode loop, recording into the store."""
