"""The contracts every other layer builds on: the policy and simulator contracts, protocols as data
(suites, episode grids), the one user-facing error, hashing, provenance, image operations. It imports
nothing else of the project."""
