"""The cached stage runner: manifests, hashing, atomic commits (see runner.py)."""
