"""vaerun's Optuna sweeper as a Hydra plugin: Hydra instantiates plugins only from the ``hydra_plugins``
namespace package. The work is done in
vaerun.cli.study_sweeper and vaerun.search; the config is configs/hydra/sweeper/optuna.yaml."""
