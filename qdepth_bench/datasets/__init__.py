"""Training data: one episode/sample type for every source (LIBERO HDF5, LeRobot parquet, Open-X RLDS),
depth annotation caches and the depth codes made from them."""
