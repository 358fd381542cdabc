"""``hydra/sweeper=optuna``: an Optuna study over Hydra's sweep syntax (vaerun.cli.study_sweeper)."""

from vaerun.cli.study_sweeper import StudySweeper


class OptunaSweeper(StudySweeper):
    """The plugin class Hydra finds; everything it does is StudySweeper's."""
