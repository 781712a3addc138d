"""The zoo's logit-based methods (one module each)."""

METHODS: list = []
