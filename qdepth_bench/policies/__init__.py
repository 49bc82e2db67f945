"""Policy implementations shipped with qdepth-bench; each is registered by a YAML file in `policies/`."""
