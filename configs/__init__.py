"""vaerun's Hydra configs.

This folder is the source of the configs; the build ships it inside the package as ``vaerun.configs``
(see pyproject.toml), so that ``vae-run`` finds them through ``pkg://vaerun.configs`` from any working
directory, after an editable or a plain install alike. The file makes the folder an importable package.
"""
