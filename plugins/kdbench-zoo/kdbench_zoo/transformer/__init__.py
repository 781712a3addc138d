"""The zoo's transformer-based methods (one module each)."""

METHODS: list = []
