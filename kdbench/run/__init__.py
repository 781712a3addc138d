"""Stage 2, the runs: the runner, the engine (THE training loop), teachers, budgets and the store.

A run goes runner -> (teachers, budget) -> engine; every file it writes goes
through :mod:`kdbench.run.store`.
"""
