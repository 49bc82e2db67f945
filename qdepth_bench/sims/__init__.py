"""Simulators, one folder each; `registry/sims.py` names them. A folder's `__init__` declares its
`SimulatorInfo` and imports nothing of the simulator, so an uninstalled simulator still explains itself."""
