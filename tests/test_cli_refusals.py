"""What a wrong command line gets answered: one line naming the key and what would work, exit 2, and nothing
written; the help and the version. The real ``vae-run``, as in test_cli."""

from __future__ import annotations

import json

import pytest
from conftest import TINY, vae_run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["latent=0"], "latent must be an integer >= 1"),
        (["latent=1.5"], "latent must be an integer >= 1"),
        (["corruption=pixel_drop", "corruption.p=2"], "corruption.p must be a number in [0, 1]"),
        (["corruption=blur", "corruption.sigma=-0.5"], "corruption.sigma must be a number > 0"),
        (
            ["data=digits", "corruption=block_mask", "corruption.size=9"],
            "corruption.size must be an integer in [1, 8]",
        ),
        (["stage=sample", "ckpt=missing.ckpt"], "ckpt: no such file or run directory: missing.ckpt"),
        (["data=digits", "device=gpu"], "device=gpu"),
        # found once the data is loaded, still before anything is written
        (["data=digits", "trainer.val_check_interval=8"], "trainer.val_check_interval=8: an epoch's"),
        # a keyword no rule knows, refused by the library while the run is built
        (["data=digits", "+encoder.bogus=1"], "encoder: MLP.__init__() got an unexpected keyword argument"),
        # torch.compile cannot differentiate through the Hamiltonian VAE's leapfrog gradients
        (["data=digits", "posterior=hamiltonian", "compile=true"], "compile=true: this posterior's steps"),
        # an interpolation that does not resolve: OmegaConf's message, without its lines of detail
        (["data=digits", "latent=${nope}"], "latent: Interpolation key 'nope' not found"),
        (["data=digits", "~latent"], "latent: missing from the config, and every run reads it"),
        (
            ["data=digits", "logger=[]"],
            "logger: missing from the config, and every run reads it (removed with ",
        ),
    ],
)
def test_bad_input_is_one_clear_line_a_non_zero_exit_and_no_run_dir(tmp_path, args, message):
    result = vae_run(*args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"vae-run: error: {message}")  # the last line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # Hydra's run directory, and the folders above it, gone


def test_a_config_file_of_the_users_that_does_not_parse_is_one_line_naming_it(tmp_path):
    (tmp_path / "mine" / "data").mkdir(parents=True)
    (tmp_path / "mine" / "data" / "broken.yaml").write_text("batch_size: [64\nseed: 1\n")
    result = vae_run("--config-dir", "mine", "data=broken", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "vae-run: error: --config-dir: mine/data/broken.yaml, line 2: expected ','" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_bad_input_leaves_the_parent_of_a_chosen_run_dir_alone(tmp_path):
    (tmp_path / "mine").mkdir()
    result = vae_run("latent=0", f"hydra.run.dir={tmp_path / 'mine' / 'run'}", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert (tmp_path / "mine").is_dir() and not (tmp_path / "mine" / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["model=gan"],
            "model=gan: no such option (model options: ae, beta_vae, dae, iwae, vae, vae2, vae_mcmc, vqvae)",
        ),
        (["model=vea"], "model=vea: no such option; did you mean vae?"),
        (
            ["trainer.max_epoch=3"],
            "trainer.max_epoch: no such key in the config; did you mean trainer.max_epochs",
        ),
        (
            ["encoder.hiden=[8]"],
            "did you mean encoder.hidden or model.hidden? (to add a new key: +encoder.hiden=[8])",
        ),
        (
            ["corruption.size=14"],
            "corruption.size: the corruption chosen has no such key; corruption=block_16 and "
            "corruption=block_mask have it: choose one of them with it",
        ),
        (
            ["model.codebook_size=8"],
            "model.codebook_size: the model chosen has no such key; model=vqvae has it: choose that option "
            "with it",
        ),
        (["+latent=3"], "+latent: latent is in the config already; give it without the +, as latent=VALUE"),
        (
            ["inference=iaf"],
            "inference: this group has no default to override; add one with a plus: +inference=OPTION "
            "(inference options: gaussian, hamiltonian, iaf, mcmc_hmc, mcmc_mala, mcmc_rwmh, metflow, "
            "planar)",
        ),
        (["impute.images=5"], "impute.images is now impute.test_images: give impute.test_images=5"),
        (["latent=[1,"], "the command line: no viable alternative at input '[1,'"),
        (
            ["data=image_folder", "data.source.path=~/photos"],
            "data.source.path=~/photos: Hydra's override syntax takes a ~ only inside quotes: write "
            "'data.source.path=\"~/photos\"' (the shell's quotes around Hydra's), "
            "or data.source.path=$HOME/photos",
        ),
        (  # the whole value, though Hydra cuts it at the space; no $HOME way, which needs quotes too
            ["data=image_folder", "data.source.path=~/my photos"],
            "data.source.path=~/my photos: Hydra's override syntax takes a ~ only inside quotes: write "
            "'data.source.path=\"~/my photos\"' (the shell's quotes around Hydra's)\n",
        ),
        (
            ["data=image_folder", "data.source.path=fötos"],
            "data.source.path=fötos: Hydra's override syntax takes letters beyond ASCII only inside quotes: "
            "write 'data.source.path=\"fötos\"'",
        ),
        (["latent", "=", "2"], "latent = 2: an override is one word, KEY=VALUE without spaces: latent=2"),
        (["train"], "train: an override is KEY=VALUE; did you mean stage=train? (see --help)"),
        (["latent_sweep"], "latent_sweep: an override is KEY=VALUE; did you mean +experiment=latent_sweep?"),
        (["model=VAE"], "model=VAE: no such option; did you mean vae? (model options: "),
        (["-m", "slurm"], "slurm: an override is KEY=VALUE; did you mean hydra/launcher=slurm? (see --help)"),
        (
            ["-m", "launcher=slurm", "latent=2,4"],
            "launcher: no such key in the config; Hydra's launcher is a group: give hydra/launcher=slurm",
        ),
        (
            ["--latent=2"],
            "--latent=2: no such flag; an override has no dashes: latent=2 (vae-run --help lists",
        ),
        (  # a sweep's values in one run: -m forgotten
            ["latent=2,4"],
            "latent=2,4: a comma makes a sweep, a list or a string: add -m to run one run per value "
            "(vae-run -m latent=2,4), or give a list as latent=[2,4], or a string as 'latent=\"2,4\"'",
        ),
        (  # a folder's name the grammar reads only inside quotes
            ["data=image_folder", "data.source.path=/data/photos (1)"],
            "data.source.path=/data/photos (1): Hydra's override syntax takes ( ) , = # ' in a value only "
            "inside quotes: write 'data.source.path=\"/data/photos (1)\"'",
        ),
        (  # a folder's name that looks like a call of a function Hydra does not have
            ["data=image_folder", "data.source.path=a(b)"],
            "data.source.path=a(b): Hydra's override syntax takes ( ) , = # ' in a value only inside quotes",
        ),
        (
            ["-m", "latent=choise(2,4)"],
            "latent=choise(2,4): Hydra has no function choise; did you mean choice? (its functions: bool, "
            "choice,",
        ),
        (
            ["data=image_folder", "data.source.path=/data/it's"],
            'write "data.source.path=\\"/data/it\'s\\"" (the shell\'s quotes around Hydra\'s)',
        ),
        (["-m", "latent=2,4", "--cfg", "job"], "--multirun, --cfg: Hydra takes one of these at a time"),
        (  # a key under a node that is null: a traceback inside Hydra, its last line kept
            ["-m", "latent=2,3", "hydra.sweeper.params.latent=4"],
            "the command line: Hydra could not compose the config (AssertionError: ",
        ),
        (["--cfg", "jobs"], "--cfg: invalid choice: 'jobs' (choose from 'job', 'hydra', 'all')"),
        (  # raised by Hydra's own checks of its flags, where its refusals of overrides are reported
            ["--resolve"],
            "The --resolve flag can only be used in conjunction with --cfg or --help",
        ),
        (["--experimental-rerun", "nosuch.pickle"], "--experimental-rerun: no such file: nosuch.pickle"),
        (  # Path("") is the working directory: the run's files would go in among the user's own
            ["hydra.run.dir="],
            "hydra.run.dir= is empty: give a directory (hydra.run.dir=. for this one), or leave it out",
        ),
        (["-m", "latent=2", "hydra.sweep.dir="], "hydra.sweep.dir= is empty: give a directory"),
        (  # as lightning-hydra-template's users turn its loggers off; Hydra's message names no group
            ["logger=null"],
            "logger=null: a config group takes an option's name, and every run reads logger (logger options: "
            "csv, mlflow, tensorboard, wandb)",
        ),
        (  # a typed node of a launcher plugin's config: what Hydra's second line says
            ["-m", "latent=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=x"],
            "hydra.launcher.n_jobs=x: Value 'x' of type 'str' could not be converted to Integer",
        ),
    ],
)
def test_hydras_refusals_are_one_line_naming_the_key_and_what_would_work(tmp_path, args, message):
    result = vae_run(*args, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("vae-run: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


def test_a_plus_on_a_trainer_key_that_the_config_now_lists_still_sets_it(tmp_path):
    result = vae_run("data=digits", "+trainer.val_check_interval=8", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "trainer.val_check_interval=8: an epoch's" in result.stderr


def test_version_names_vaeruns_and_its_libraries_not_hydras_alone(tmp_path):
    from importlib.metadata import version

    result = vae_run("latent=3", "--version", cwd=tmp_path)
    assert result.stdout.startswith(f"vae-run {version('vaerun')} (Python ")
    assert f"torch {version('torch')}, pytorch-lightning {version('pytorch-lightning')}" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_help_lists_the_groups_and_cfg_job_prints_the_config(tmp_path):
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "wide_vae.yaml").write_text("defaults:\n  - vae\n")
    (tmp_path / "mine" / "hydra" / "launcher").mkdir(parents=True)  # a cluster's own launcher config
    (tmp_path / "mine" / "hydra" / "launcher" / "my_cluster.yaml").write_text("defaults:\n  - slurm\n")
    result = vae_run("--config-dir", "mine", "model=dae", "--help", cwd=tmp_path)
    for group in ("model", "encoder", "corruption", "data", "device"):
        assert f"{group}:" in result.stdout
    assert (
        "model: ae, beta_vae, dae, iwae, vae, vae2, vae_mcmc, vqvae, wide_vae" in result.stdout
    )  # the user's option too
    assert "_target_: vaerun.models.autoencoders.Autoencoder" in result.stdout  # the composed model=dae
    assert "vae-run model=vae latent=2" in result.stdout
    # Hydra's groups a multirun picks from, with vaerun's own options among Hydra's and its plugins'
    lines = result.stdout.splitlines()
    launchers = "hydra/launcher: basic, joblib, my_cluster, slurm, submitit_local, submitit_slurm (with -m"
    assert any(line.startswith(launchers) for line in lines)
    assert "hydra/sweeper: basic, optuna (with -m: how values are chosen)" in lines
    job = vae_run("model=vae", "latent=2", "--cfg", "job", cwd=tmp_path)
    assert "latent: 2" in job.stdout
    assert json.dumps(job.returncode) == "0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["data.source.val_size=0", "stage=train"],
            "data: the validation split of digits is empty (train 1617, val 0, test 180): training keeps its "
            "best checkpoint by val/loss; use more data, or a larger share for that split "
            "(data.source.val_size=0)",
        ),
        (
            ["data.source.test_size=0"],
            "data: the test split of digits is empty (train 1617, val 180, test 0)",
        ),
        (  # the two validation images are 5s
            ["data.source.val_size=2", "data.source.test_size=1", "stage=anomaly", "data.normal_class=3"],
            "the validation split of digits is empty once only data.normal_class=3 is kept",
        ),
        (  # the one test image is a 6
            ["data.source.test_size=1", "stage=anomaly", "data.normal_class=3"],
            "data.normal_class=3: the test split of digits holds images of class 6 only",
        ),
    ],
)
def test_a_split_the_stages_read_that_is_empty_is_refused_before_anything_is_written(tmp_path, args, message):
    result = vae_run("data=digits", *args, *TINY, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("vae-run: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not list((tmp_path / "outputs").rglob("*.*"))  # no run directory, nothing half-written


def test_hydras_help_names_vaeruns_version_flag_and_skips_the_apps_overrides(tmp_path):
    # Hydra composes its own config alone for --hydra-help: latent=3 made it raise a 58-line traceback
    result = vae_run("--hydra-help", "latent=3", cwd=tmp_path)
    assert "--version : Show the versions of vae-run, Python, torch," in result.stdout
    assert "Hydra's version" not in result.stdout
    assert "hydra/launcher: basic, joblib, slurm" in result.stdout and not result.stderr
    refused = vae_run("--hydra-help", "hydra/launcher=nosuch", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("vae-run: error: hydra/launcher=nosuch: no such option")
    assert not (tmp_path / "outputs").exists()


def test_compile_true_on_a_cpu_without_its_cpp_compiler_is_one_line(tmp_path, monkeypatch):
    """torch.compile builds a CPU run's kernels with the C++ compiler CXX names (else g++): missing, it used
    to surface as Inductor's traceback at the first compiled step, after the run had started writing."""
    missing = tmp_path / "no-such-c++"
    monkeypatch.setenv("CXX", str(missing))
    result = vae_run("data=digits", "device=cpu", "compile=true", *TINY, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"vae-run: error: compile=true: on a CPU torch.compile builds its kernels with a C++ compiler, and "
        f"CXX={missing} is not found; install one (or name it in CXX) or set compile=false"
    )
    assert not (tmp_path / "outputs").exists()
