"""Model implementations behind the policies (QDepth-VLA and its variants)."""
