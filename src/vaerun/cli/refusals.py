"""Hydra's own refusals of a command line (a key not in the config, an option that does not exist, a
``+`` on a key that does), answered as vae-run answers every bad input: one line that names the key and
says what would work, exit 2.

Hydra prints its refusal before any of vae-run's code runs, so what it writes to stderr until the task
function starts is held back (``HeldStartupErrors``) and, if it ends the command, rewritten here.
"""

from __future__ import annotations

import difflib
import io
import os
import re
import sys
from pathlib import Path
from types import TracebackType

from hydra.errors import HydraException
from omegaconf import OmegaConf

from vaerun.cli import output_folder
from vaerun.cli.help import HYDRA_GROUPS, config_files, group_options, hydra_group_options
from vaerun.core.errors import exit_with_error
from vaerun.core.names import STAGES

#: keys renamed since an earlier vaerun: the old name is answered with the new one
RENAMED = {"impute.images": "impute.test_images", "impute.num_images": "impute.shown"}


def without_plus_on_trainer_keys(argv: list[str], trainer_config: Path) -> list[str]:
    """``+trainer.KEY=VALUE`` for a KEY that configs/trainer/default.yaml now lists (an earlier vaerun
    needed the +) sets it, as ``trainer.KEY=VALUE`` does, instead of Hydra's refusal to add a key twice."""
    listed = set(OmegaConf.load(trainer_config)) if trainer_config.is_file() else set()

    def as_set(token: str) -> str:
        found = re.fullmatch(r"\+trainer\.(\w+)=.*", token)
        return token[1:] if found and found.group(1) in listed else token

    return [as_set(token) for token in argv]


def refuse_bad_flags(argv: list[str]) -> None:
    """Hydra's own flags, read with Hydra's own parser: a bad value (``--cfg jobs``) would get argparse's
    usage text, and more than one of Hydra's modes (-m, --cfg, --info, --run, --shell-completion) a
    ValueError's traceback; each gets one line instead."""
    from hydra._internal.utils import get_args_parser

    def refuse(message: str) -> None:  # argparse's "argument --cfg/-c: invalid choice: ..."
        exit_with_error(re.sub(r"^argument (--[\w-]+)(/-\w+)?: ", r"\1: ", message))

    parser = get_args_parser()
    parser.error = refuse  # type: ignore[method-assign]
    args, unknown = parser.parse_known_args(argv)
    if flags := [token for token in unknown if token.startswith("-")]:
        name = flags[0].lstrip("-")  # --latent=2: an override written as a flag
        hint = f"; an override has no dashes: {name}" if "=" in name else ""
        exit_with_error(f"{flags[0]}: no such flag{hint} (vae-run --help lists the flags)")
    modes = {
        "--run": args.run,
        "--multirun": args.multirun,
        "--cfg": args.cfg is not None,
        "--info": args.info is not None,
        "--shell-completion": args.shell_completion,
    }
    given = [flag for flag, on in modes.items() if on]
    if len(given) > 1:
        exit_with_error(f"{', '.join(given)}: Hydra takes one of these at a time; give one of them")


def keys_by_file(folders: list[Path]) -> list[tuple[str, Path, set[str]]]:
    """(group, file, the dotted keys it sets) of every config file under the folders but the experiments':
    the primary config's keys as they are, each group option's under the group's name (a file in the global
    package: as written)."""
    found = []
    for group, path in config_files(folders):
        if group == "experiment":
            continue
        is_global = "@package _global_" in path.read_text()[:200]
        prefix = "" if group == "." or is_global else group.replace("/", ".") + "."
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        keys = _dotted(node) if isinstance(node, dict) else []
        sets = {prefix + key for key in keys if not key.startswith(("defaults", "hydra"))}
        found.append((group, path, sets))
    return found


def config_keys(files: list[tuple[str, Path, set[str]]]) -> set[str]:
    """Every dotted key that a config file sets (``keys_by_file``), and each group's name (model=vae): the
    names a mistyped key is compared with."""
    return {group.replace("/", ".") for group, _, _ in files}.union(*(keys for _, _, keys in files))


def options_setting(key: str, files: list[tuple[str, Path, set[str]]]) -> tuple[str, list[str]] | None:
    """(group, ["group=option", ...]) for the options of ``key``'s config group whose files set it
    (corruption.size: corruption=block_16 and corruption=block_mask; model.codebook_size: model=vqvae),
    or None when no option does."""
    owners: dict[str, set[str]] = {}
    for group, path, keys in files:
        in_group = key.startswith(group.replace("/", ".") + ".")
        if group != "." and not path.stem.startswith("_") and in_group and key in keys:
            owners.setdefault(group, set()).add(f"{group}={path.stem}")
    if not owners:
        return None
    group = max(owners, key=len)  # the innermost group whose options set it
    return group, sorted(owners[group])


def _dotted(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        keys.append(f"{prefix}{name}")
        if isinstance(value, dict):
            keys += _dotted(value, f"{prefix}{name}.")
    return keys


def _did_you_mean(word: str, candidates: set[str] | list[str]) -> str:
    same_but_case = [c for c in sorted(candidates) if c.lower() == word.lower()]  # model=VAE
    close = same_but_case or difflib.get_close_matches(word, sorted(candidates), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


#: sbatch's refusal of a sweep's job array: no job was submitted
SBATCH_REFUSAL = re.compile(r"^sbatch: (?:fatal|error): (.+)$", re.MULTILINE)
#: what the Slurm launcher writes into the sweep's folder before it calls sbatch (the jobs, pickled)
SUBMITIT_FOLDER = ".submitit"

#: what a Slurm submission that found no cluster adds to sbatch's own last line
NO_SLURM_CONTROLLER = (
    " (no Slurm controller answers here: submit from a cluster's login node, or set SLURM_CONF to its "
    "slurm.conf)"
)


#: what a value holds that Hydra's grammar reads only inside quotes (a folder's name, most often)
_QUOTED_ONLY = re.compile(r"[(),=#']")


def _not_an_override(word: str, argv: list[str], folders: list[Path]) -> str:
    """A word without its KEY= (``vae-run train``), or KEY = VALUE with the shell's spaces around the =."""
    at = argv.index(word) if word in argv else -1
    if 0 <= at < len(argv) - 2 and argv[at + 1] == "=":
        value = argv[at + 2]
        return f"{word} = {value}: an override is one word, KEY=VALUE without spaces: {word}={value}"
    # a group the primary config picks an option of takes GROUP=OPTION; the others (+experiment=...) a plus
    picked = _groups_picked(folders[0])
    overrides = [
        f"{'' if group in picked else '+'}{group}={word}"
        for group, names in group_options(folders).items()
        if word in names
    ]
    overrides += [
        f"{group}={word}" for group, names in hydra_group_options(folders[1:]).items() if word in names
    ]
    overrides += [f"stage={word}"] if word in STAGES else []
    hint = f"; did you mean {' or '.join(overrides)}?" if overrides else ""
    return f"{word}: an override is KEY=VALUE{hint} (see --help)"


def _groups_picked(folder: Path) -> set[str]:
    """The groups whose option the primary config's defaults list picks (model, data, ...)."""
    defaults = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml")).get("defaults", [])
    return {name for entry in defaults if isinstance(entry, dict) for name in entry}


def _quoted(key: str, value: str) -> str:
    """KEY="VALUE" in Hydra's quotes, inside the shell's: single ones, or double ones where the value holds
    an apostrophe."""
    return f'"{key}=\\"{value}\\""' if "'" in value else f"'{key}=\"{value}\"'"


def _only_inside_quotes(key: str, value: str, what: str) -> str:
    """The answer to a value Hydra's grammar took apart: ``what`` in it needs quotes, and the override with
    them."""
    quoted = _quoted(key, value)
    return (
        f"{key}={value}: Hydra's override syntax takes {what} only inside quotes: write {quoted} "
        "(the shell's quotes around Hydra's)"
    )


def _value_given(key: str, argv: list[str]) -> str | None:
    """The value of ``key`` as the command line gave it, whole: Hydra's messages cut it at a space."""
    values = [token.partition("=")[2] for token in argv if token.partition("=")[0] == key]
    return values[-1] if values else None


def _value_to_quote(argv: list[str]) -> tuple[str, str] | None:
    """The first override of the command line that Hydra cannot parse and that quotes would mend: its value
    holds what the grammar reads only inside quotes, and is no list, dict or call of Hydra's functions
    (``choice(...)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser, create_functions

    parser = OverridesParser.create()
    functions = create_functions().functions  # choice, range, glob, ...: a(b) is a folder's name
    for token in argv:
        key, equals, value = token.partition("=")
        if token.startswith("-") or not equals or not _QUOTED_ONLY.search(value) or '"' in value:
            continue
        called = re.fullmatch(r"(\w+)\(.*\)", value)
        if value[:1] in "[{" or (called and called.group(1) in functions):
            continue
        try:
            parser.parse_override(token)
        except Exception:
            return key, value
    return None


def one_line(text: str, folders: list[Path]) -> str:
    """Hydra's refusal (its stderr text) as one line naming the key and what would work."""
    argv = sys.argv[1:]  # what the command line said, where Hydra's message cuts or leaves it out
    if said := SBATCH_REFUSAL.findall(text):  # the Slurm launcher's
        no_cluster = any(
            "configuration source" in line or "contact slurm controller" in line for line in said
        )
        hint = NO_SLURM_CONTROLLER if no_cluster else ""
        return f"hydra/launcher=slurm: sbatch did not submit the jobs: {said[-1]}{hint}"
    if found := re.search(r"Could not override '([^']+)'\.\nTo append to your config use (\S+)", text):
        key, append = found.groups()
        value = append.partition("=")[2]
        if key in RENAMED:
            return f"{key} is now {RENAMED[key]}: give {RENAMED[key]}={value}"
        if f"hydra/{key}" in HYDRA_GROUPS:  # launcher=slurm, sweeper=optuna
            return f"{key}: no such key in the config; Hydra's {key} is a group: give hydra/{key}={value}"
        files = keys_by_file(folders)
        if owners := options_setting(key, files):  # a key of another option of its group
            group, choices = owners
            choose = "has it: choose that option" if len(choices) == 1 else "have it: choose one of them"
            return f"{key}: the {group} chosen has no such key; {' and '.join(choices)} {choose} with it"
        same_depth = {k for k in config_keys(files) if k.count(".") == key.count(".")}
        hint = _did_you_mean(key, same_depth - {".", key})
        return f"{key}: no such key in the config{hint} (to add a new key: {append})"
    if found := re.search(
        r"Could not find '([^']+)/([^'/]+)'\n+Available options in '[^']+':\n((?:\t.*\n?)*)", text
    ):
        group, option, listed = found.groups()
        options = [line.strip() for line in listed.splitlines() if line.strip() and "\t_" not in line]
        hint = _did_you_mean(option, options)
        return f"{group}={option}: no such option{hint} ({group} options: {', '.join(options)})"
    if found := re.search(r"Could not override '([^']+)'\. No match in the defaults list", text):
        group = found.group(1)  # a group with no default option (experiment, inference): added with a +
        options = group_options(folders).get(group, [])
        listed = f" ({group} options: {', '.join(options)})" if options else ""
        return f"{group}: this group has no default to override; add one with a plus: +{group}=OPTION{listed}"
    if "Config group override must be a string or a list" in text:  # GROUP=null, named by the command line
        nulled = [token.partition("=")[0] for token in argv if re.fullmatch(r"[\w/]+=null", token)]
        options = group_options(folders)
        group = next((name for name in nulled if name in options), "GROUP")
        listed = f" ({group} options: {', '.join(options[group])})" if group in options else ""
        return f"{group}=null: a config group takes an option's name, and every run reads {group}{listed}"
    if found := re.search(r"An item is already at '([^']+)'", text):
        key = found.group(1)
        return f"+{key}: {key} is in the config already; give it without the +, as {key}=VALUE"
    if found := re.search(r"LexerNoViableAltException: ([^=\s]+)=(\S*~\S*)", text):
        key, value = found.groups()  # a home folder written as ~/...: Hydra's grammar keeps ~ for deletions
        value = _value_given(key, argv) or value
        # $HOME only where the rest needs no quotes, from the shell or from Hydra
        home = f", or {key}=$HOME{value[1:]}" if re.fullmatch(r"~/[\w./+-]*", value) else ""
        return _only_inside_quotes(key, value, "a ~") + home
    if found := re.search(r"LexerNoViableAltException: ([^=\s]+)=(\S*[^\x00-\x7f]\S*)", text):
        key, value = found.groups()  # a folder named in letters beyond ASCII: Hydra's grammar quotes them
        return _only_inside_quotes(key, _value_given(key, argv) or value, "letters beyond ASCII")
    if found := re.search(r"Error parsing override '([^']*)'\nmissing EQUAL", text):
        return _not_an_override(found.group(1), argv, folders)
    if found := re.search(r"Ambiguous value for argument '([^=']+)=([^']*)'", text):
        key, value = found.groups()  # a sweep's values in one run: the commonest slip, -m forgotten
        return (
            f"{key}={value}: a comma makes a sweep, a list or a string: add -m to run one run per value "
            f"(vae-run -m {key}={value}), or give a list as {key}=[{value}], or a string as "
            f"{_quoted(key, value)}"
        )
    if (found := re.search(r"Unknown function '(\w+)'\nAvailable: (\S+)", text)) and (
        hint := _did_you_mean(found.group(1), found.group(2).split(","))
    ):  # choise(2,4); a(b), far from every function's name, is a value to quote (below)
        name, functions = found.groups()
        token = next((t for t in argv if f"={name}(" in t), f"{name}(...)")
        return f"{token}: Hydra has no function {name}{hint} (its functions: {functions.replace(',', ', ')})"
    if "override_grammar" in text and (unquoted := _value_to_quote(argv)):
        return _only_inside_quotes(*unquoted, "( ) , = # ' in a value")
    if found := re.search(r"^File (.+) does not exist!$", text, re.MULTILINE):  # Hydra's rerun of a run
        return f"--experimental-rerun: no such file: {found.group(1)} (it takes a run's .hydra/config.pickle)"
    if found := re.search(r"Error merging override (\S+)\n(.+)", text):  # a typed node (Hydra's plugins)
        override, reason = found.groups()
        return f"{override}: {reason.strip()}"
    if "override_grammar" in text:
        return (
            f"the command line: {text.strip().splitlines()[0]} (the override syntax: KEY=VALUE, see --help)"
        )
    lines = [line for line in text.strip().splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    if lines and lines[0].startswith("Traceback"):  # a failure inside Hydra: its last line says what
        return f"the command line: Hydra could not compose the config ({lines[-1].strip()})"
    return lines[0].strip() if lines else "Hydra refused the command line"


class _HeldStream(io.StringIO):
    """Python-level writes held back; the file descriptor stays the real stderr's, for child processes
    (a launcher's workers) that write to it directly."""

    def __init__(self, real: io.TextIOBase) -> None:
        super().__init__()
        self.real = real

    def fileno(self) -> int:
        return self.real.fileno()

    def isatty(self) -> bool:
        return self.real.isatty()


class HeldStartupErrors:
    """Holds back what goes to stderr until ``release()`` (called where the task function starts); if
    the command ends before that with Hydra's exit status 1, its text becomes one vae-run error line.
    HYDRA_FULL_ERROR=1 leaves Hydra's own output as it is."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.stderr = sys.stderr
        self.held = _HeldStream(self.stderr)

    def __enter__(self) -> HeldStartupErrors:
        global _holding
        if os.environ.get("HYDRA_FULL_ERROR") != "1":
            sys.stderr, _holding = self.held, self
        return self

    def release(self) -> None:
        if sys.stderr is self.held:
            sys.stderr = self.stderr
            self.stderr.write(self.held.getvalue())

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        global _holding
        _holding = None
        if sys.stderr is not self.held:
            return
        sys.stderr = self.stderr
        text = self.held.getvalue()
        if isinstance(error, SystemExit) and error.code == 1 and text.strip():
            # Hydra refused a job's config after the folder was made, or sbatch submitted none of the jobs
            submitted_nothing = SBATCH_REFUSAL.search(text) is not None
            output_folder.discard_unstarted(launcher_files=(SUBMITIT_FOLDER,) if submitted_nothing else ())
            exit_with_error(one_line(text, self.folders))
        if isinstance(error, HydraException) or _raised_in_hydra(error):
            # --hydra-help's composition, a flag's check (--resolve without --cfg): raised, not reported
            exit_with_error(one_line(f"{error}\n{text}", self.folders))
        self.stderr.write(text)


def _raised_in_hydra(error: BaseException | None) -> bool:
    """Whether ``error`` is an Exception raised by Hydra's own code (its innermost frame is Hydra's)."""
    if not isinstance(error, Exception) or error.__traceback__ is None:
        return False
    trace = error.__traceback__
    while trace.tb_next is not None:
        trace = trace.tb_next
    return str(trace.tb_frame.f_globals.get("__name__", "")).startswith("hydra.")


#: the holder in force, if any: a module attribute, so that the task function (which a launcher may
#: pickle and run in another process) refers to it through ``release_startup_errors`` alone
_holding: HeldStartupErrors | None = None


def release_startup_errors() -> None:
    """Where the task function starts: what Hydra wrote so far goes to stderr, and the rest goes there
    directly."""
    if _holding is not None:
        _holding.release()
