"""Hydra's refusal of a command line, read: the key, group or value it names, and the one line vae-run
answers with instead, which names it and says what would work (``one_line``). Each kind of refusal is one
rule: a function of Hydra's text, the command line and the config folders that answers it, or None where
the text is another kind's.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from vaerun.cli.help import HYDRA_GROUPS, config_files, group_options, hydra_group_options
from vaerun.core.names import STAGES

#: keys renamed since an earlier vaerun: the old name is answered with the new one
RENAMED = {"impute.images": "impute.test_images", "impute.num_images": "impute.shown"}

#: sbatch's refusal of a sweep's job array: no job was submitted
SBATCH_REFUSAL = re.compile(r"^sbatch: (?:fatal|error): (.+)$", re.MULTILINE)

#: what a Slurm submission that found no cluster adds to sbatch's own last line
NO_SLURM_CONTROLLER = (
    " (no Slurm controller answers here: submit from a cluster's login node, or set SLURM_CONF to its "
    "slurm.conf)"
)


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


def _sbatch_refused(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """The Slurm launcher's: sbatch submitted none of the jobs."""
    if not (said := SBATCH_REFUSAL.findall(text)):
        return None
    no_cluster = any("configuration source" in line or "contact slurm controller" in line for line in said)
    hint = NO_SLURM_CONTROLLER if no_cluster else ""
    return f"hydra/launcher=slurm: sbatch did not submit the jobs: {said[-1]}{hint}"


def _unknown_key(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """A key the config does not have: renamed, a group of Hydra's, another option's, or mistyped."""
    if not (found := re.search(r"Could not override '([^']+)'\.\nTo append to your config use (\S+)", text)):
        return None
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


def _unknown_option(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """An option a group does not have, with the group's options."""
    listing = r"Could not find '([^']+)/([^'/]+)'\n+Available options in '[^']+':\n((?:\t.*\n?)*)"
    if not (found := re.search(listing, text)):
        return None
    group, option, listed = found.groups()
    options = [line.strip() for line in listed.splitlines() if line.strip() and "\t_" not in line]
    hint = _did_you_mean(option, options)
    return f"{group}={option}: no such option{hint} ({group} options: {', '.join(options)})"


def _group_without_default(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """A group with no default option (experiment, inference) given without the + that adds it."""
    if not (found := re.search(r"Could not override '([^']+)'\. No match in the defaults list", text)):
        return None
    group = found.group(1)
    options = group_options(folders).get(group, [])
    listed = f" ({group} options: {', '.join(options)})" if options else ""
    return f"{group}: this group has no default to override; add one with a plus: +{group}=OPTION{listed}"


def _group_set_to_null(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """GROUP=null, named by the command line (Hydra's message does not name it)."""
    if "Config group override must be a string or a list" not in text:
        return None
    nulled = [token.partition("=")[0] for token in argv if re.fullmatch(r"[\w/]+=null", token)]
    options = group_options(folders)
    group = next((name for name in nulled if name in options), "GROUP")
    listed = f" ({group} options: {', '.join(options[group])})" if group in options else ""
    return f"{group}=null: a config group takes an option's name, and every run reads {group}{listed}"


def _key_added_twice(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """+KEY for a key the config has."""
    if not (found := re.search(r"An item is already at '([^']+)'", text)):
        return None
    key = found.group(1)
    return f"+{key}: {key} is in the config already; give it without the +, as {key}=VALUE"


def _home_folder_as_tilde(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """A home folder written as ~/...: Hydra's grammar keeps ~ for deletions."""
    if not (found := re.search(r"LexerNoViableAltException: ([^=\s]+)=(\S*~\S*)", text)):
        return None
    key, value = found.groups()
    value = _value_given(key, argv) or value
    # $HOME only where the rest needs no quotes, from the shell or from Hydra
    home = f", or {key}=$HOME{value[1:]}" if re.fullmatch(r"~/[\w./+-]*", value) else ""
    return _only_inside_quotes(key, value, "a ~") + home


def _letters_beyond_ascii(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """A folder named in letters beyond ASCII: Hydra's grammar takes them inside quotes."""
    if not (found := re.search(r"LexerNoViableAltException: ([^=\s]+)=(\S*[^\x00-\x7f]\S*)", text)):
        return None
    key, value = found.groups()
    return _only_inside_quotes(key, _value_given(key, argv) or value, "letters beyond ASCII")


def _word_without_equals(text: str, argv: list[str], folders: list[Path]) -> str | None:
    if not (found := re.search(r"Error parsing override '([^']*)'\nmissing EQUAL", text)):
        return None
    return _not_an_override(found.group(1), argv, folders)


def _comma_without_multirun(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """A sweep's values in one run: the commonest slip, -m forgotten."""
    if not (found := re.search(r"Ambiguous value for argument '([^=']+)=([^']*)'", text)):
        return None
    key, value = found.groups()
    return (
        f"{key}={value}: a comma makes a sweep, a list or a string: add -m to run one run per value "
        f"(vae-run -m {key}={value}), or give a list as {key}=[{value}], or a string as {_quoted(key, value)}"
    )


def _mistyped_function(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """choise(2,4); a(b), far from every function's name, is a value to quote (below)."""
    found = re.search(r"Unknown function '(\w+)'\nAvailable: (\S+)", text)
    if not found or not (hint := _did_you_mean(found.group(1), found.group(2).split(","))):
        return None
    name, functions = found.groups()
    token = next((t for t in argv if f"={name}(" in t), f"{name}(...)")
    return f"{token}: Hydra has no function {name}{hint} (its functions: {functions.replace(',', ', ')})"


def _value_needing_quotes(text: str, argv: list[str], folders: list[Path]) -> str | None:
    if "override_grammar" not in text or not (unquoted := _value_to_quote(argv)):
        return None
    return _only_inside_quotes(*unquoted, "( ) , = # ' in a value")


def _rerun_without_its_file(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """Hydra's rerun of a run, given a file that is not there."""
    if not (found := re.search(r"^File (.+) does not exist!$", text, re.MULTILINE)):
        return None
    return f"--experimental-rerun: no such file: {found.group(1)} (it takes a run's .hydra/config.pickle)"


def _typed_node_refused(text: str, argv: list[str], folders: list[Path]) -> str | None:
    """A value a typed node (Hydra's plugins' configs) does not take."""
    if not (found := re.search(r"Error merging override (\S+)\n(.+)", text)):
        return None
    override, reason = found.groups()
    return f"{override}: {reason.strip()}"


def _other_syntax_error(text: str, argv: list[str], folders: list[Path]) -> str | None:
    if "override_grammar" not in text:
        return None
    return f"the command line: {text.strip().splitlines()[0]} (the override syntax: KEY=VALUE, see --help)"


#: the rules, in the order they are tried: the first that answers gives the line
RULES: tuple[Callable[[str, list[str], list[Path]], str | None], ...] = (
    _sbatch_refused,
    _unknown_key,
    _unknown_option,
    _group_without_default,
    _group_set_to_null,
    _key_added_twice,
    _home_folder_as_tilde,
    _letters_beyond_ascii,
    _word_without_equals,
    _comma_without_multirun,
    _mistyped_function,
    _value_needing_quotes,
    _rerun_without_its_file,
    _typed_node_refused,
    _other_syntax_error,
)


def one_line(text: str, folders: list[Path]) -> str:
    """Hydra's refusal (its stderr text) as one line naming the key and what would work."""
    argv = sys.argv[1:]  # what the command line said, where Hydra's message cuts or leaves it out
    for rule in RULES:
        if (line := rule(text, argv, folders)) is not None:
            return line
    lines = [line for line in text.strip().splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    if lines and lines[0].startswith("Traceback"):  # a failure inside Hydra: its last line says what
        return f"the command line: Hydra could not compose the config ({lines[-1].strip()})"
    return lines[0].strip() if lines else "Hydra refused the command line"
