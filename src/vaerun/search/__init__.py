"""Hyperparameter search with Optuna, in parts a user can read one at a time: the search space from Hydra's
sweep syntax (space), the study and its storage (study), what a finished job says about its trial (outcome),
and what a search leaves in its sweep folder (results). The sweep loop itself, ``hydra/sweeper=optuna``, is
vaerun.cli.study_sweeper. Torch-free, and Optuna is imported only once a search starts."""
