"""``vae-run --help``: the config groups with their options, listed from the config folders themselves
(Hydra's own help builds a config repository per group, seconds on a small machine), and the config the
given overrides compose, as Hydra's help shows it."""

from __future__ import annotations

import platform
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from omegaconf import OmegaConf

HELP_FLAGS = ("--help", "-h")
#: vae-run's own version (Hydra's --version would print Hydra's alone)
VERSION_FLAG = "--version"
#: the libraries whose versions a bug report needs beside vaerun's
REPORTED_LIBRARIES = ("torch", "pytorch-lightning", "hydra-core")
#: Hydra's help, whose line for --version describes Hydra's flag rather than vae-run's
HYDRA_HELP_FLAG = "--hydra-help"
HYDRA_VERSION_HELP = "--version : Show Hydra's version and exit"


def with_vaeruns_version_flag(hydra_help: str) -> str:
    """Hydra's help with its line for --version saying what vae-run's prints."""
    return hydra_help.replace(
        HYDRA_VERSION_HELP,
        f"{VERSION_FLAG} : Show the versions of vae-run, Python, {', '.join(REPORTED_LIBRARIES)}, and exit",
    )


def version_text(program: str = "vae-run") -> str:
    """The versions of vaerun, Python and REPORTED_LIBRARIES, from the installed packages' metadata (none is
    imported, so it answers at once)."""

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in REPORTED_LIBRARIES)
    return f"{program} {installed('vaerun')} (Python {platform.python_version()}; {libraries})"


def config_files(folders: list[Path]) -> Iterator[tuple[str, Path]]:
    """(group, file) of every YAML file under the config folders, Hydra's own ``hydra/`` aside; the
    primary config's group is "."."""
    for folder in folders:
        for path in folder.rglob("*.yaml"):
            group = path.parent.relative_to(folder).as_posix()
            if not group.startswith("hydra"):
                yield group, path


def group_options(folders: list[Path]) -> dict[str, list[str]]:
    """Each config group under the folders and its options (a file named _... is a group's shared base,
    not an option); a later folder's options join an earlier one's."""
    groups: dict[str, set[str]] = {}
    for group, path in config_files(folders):
        if group != "." and not path.stem.startswith("_"):
            groups.setdefault(group, set()).add(path.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


#: Hydra's own groups that a multirun picks from: where its runs go, and how their values are chosen
HYDRA_GROUPS = {
    "hydra/launcher": "with -m: where the runs go",
    "hydra/sweeper": "with -m: how values are chosen",
}


def hydra_group_options(folders: Sequence[Path] = ()) -> dict[str, list[str]]:
    """HYDRA_GROUPS' options: Hydra's own, its installed plugins', vaerun's (slurm, optuna) and those in
    ``folders`` (the user's --config-dir)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    def in_folders(group: str) -> set[str]:
        return {path.stem for folder in folders for path in (folder / group).glob("*.yaml")}

    def listed() -> dict[str, list[str]]:
        loader = GlobalHydra.instance().config_loader()
        return {
            group: sorted({*loader.get_group_options(group), *in_folders(group)}) for group in HYDRA_GROUPS
        }

    if GlobalHydra.instance().is_initialized():  # after Hydra's own main refused the command line
        return listed()
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        return listed()


def help_text(folders: list[Path], overrides: list[str]) -> str:
    """The help: header, groups, the composed config, footer. ``folders``: the package's configs first,
    then any --config-dir."""
    from hydra import compose, initialize_config_module

    if len(folders) > 1:  # --config-dir: searched as Hydra's main does
        overrides = [*overrides, f"hydra.searchpath=[{','.join(f'file://{f}' for f in folders[1:])}]"]
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        config = compose("config", overrides=overrides, return_hydra_config=True)
        hydra_groups = [
            f"{name}: {', '.join(options)} ({HYDRA_GROUPS[name]})"
            for name, options in hydra_group_options(folders[1:]).items()
        ]
    text = config.hydra.help
    groups = "\n".join(
        [
            *(f"{name}: {', '.join(options)}" for name, options in group_options(folders).items()),
            *hydra_groups,
        ]
    )
    config = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    return (
        f"{text.header}== Configuration groups ==\nCompose your configuration from those groups "
        f"(group=option)\n\n{groups}\n\n== Config ==\nOverride anything in the config (foo.bar=value)\n\n"
        f"{OmegaConf.to_yaml(config)}\n{text.footer}"
    )
