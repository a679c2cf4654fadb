"""Hyperparameter search over a strategy's declared search space (Optuna); see lmadapt.tuning.search.

The defaults of the data subset trials train on live here, light to import, for the CLI's option defaults."""

SUBSET_ABOVE = 20_000  # training rows above which trials train on a subset
SUBSET_ROWS = 5_000  # the subset's rows
