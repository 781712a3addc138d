"""The zoo's relation-based methods (one module each)."""

METHODS: list = []
