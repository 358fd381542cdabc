"""The start-up checks: one clear message naming the key, before torch is imported."""

import subprocess
import sys

import pytest
from conftest import main_in_process
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import vaerun
from vaerun.core.checks import ConfigError, check_config


def composed(*overrides: str) -> dict:
    return vaerun.compose(overrides, check=False)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=ae", "encoder=conv"],
        ["model=dae", "corruption=blur"],
        ["data=digits", "encoder=conv", "corruption=block_mask", "corruption.size=8"],
        ["corruption=gaussian_noise", "likelihood=gaussian"],
        ["data=cifar10", "encoder=conv", "likelihood=discretized_logistic"],
        ["data=celeba64", "data.source.path=faces", "encoder=conv", "corruption=block_mask"],
    ],
)
def test_the_shipped_configs_pass(overrides):
    check_config(composed(*overrides))


def test_the_celeba64_preset_picks_the_bounded_eval_and_anomaly_options_and_a_user_can_undo_them():
    faces = ["data=celeba64", "data.source.path=faces"]
    preset = composed(*faces)
    assert (preset["eval"]["iwae_images"], preset["eval"]["ais_images"]) == (2000, 16)
    assert preset["anomaly"]["iwae_samples"] == 16
    assert composed(*faces, "anomaly=default", "eval=default")["anomaly"]["iwae_samples"] == 100
    assert composed(*faces, "anomaly.iwae_samples=40")["anomaly"]["iwae_samples"] == 40
    assert composed()["anomaly"]["iwae_samples"] == 100


def test_the_latent_sweep_preset_sweeps_models_and_latent_sizes():
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=latent_sweep"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"model": "ae,vae", "latent": "2,4,8,16,32"}
    assert cfg.hydra.callbacks.summary._target_ == "vaerun.evaluation.summaries.SweepSummary"
    # trained by steps, whatever the data's size, and the checks accept it
    assert (cfg.trainer.max_steps, cfg.trainer.max_epochs) == (3000, -1)
    check_config(composed("+experiment=latent_sweep"))


def test_the_denoising_preset_sweeps_every_lecture_corruption_with_both_encoders():
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=denoising"], return_hydra_config=True)
        params = dict(cfg.hydra.sweeper.params)
        assert params["encoder"] == "mlp,conv16" and cfg.model._target_.endswith(".Autoencoder")
        runs = {}
        for option in params["corruption"].split(","):  # every option composes and passes the checks
            composed_run = compose(
                "config", overrides=["+experiment=denoising", f"corruption={option}", "encoder=conv16"]
            )
            run = OmegaConf.to_container(composed_run, resolve=True)
            check_config(run)
            runs[option] = run["corruption"]
            assert run["encoder"]["base_channels"] == 16 and run["encoder"]["_target_"].endswith(".Conv")
    assert runs["pixel_drop"]["p"] == 0.5 and runs["pixel_drop_90"]["p"] == 0.9
    assert runs["blur_4"]["sigma"] == 4.0 and runs["block_16"]["size"] == 16
    assert runs["gaussian_noise"]["_target_"].endswith("GaussianNoise")


def test_the_slurm_launcher_ships_its_resources():
    with initialize_config_module("vaerun.configs", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.cpus_per_task == 4 and launcher.timeout_min == 240


def test_eval_paper_is_the_literature_protocol():
    assert composed("eval=paper")["eval"]["iwae_samples"] == 5000
    assert composed()["eval"]["iwae_samples"] < 5000


def test_dae_defaults_to_pixel_drop_and_the_command_line_wins():
    assert composed("model=dae")["corruption"]["_target_"].endswith("PixelDrop")
    assert composed("model=dae", "corruption=blur")["corruption"]["_target_"].endswith("GaussianBlur")
    assert composed("model=ae")["corruption"]["_target_"].endswith("NoCorruption")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["latent=0"], "latent must be an integer >= 1"),
        (
            ["likelihood=discretized_logistic", "likelihood.faithful=true", "likelihood.mixtures=2"],
            r"likelihood.faithful=true: one logistic per sub-pixel",
        ),
        (["latent=2.5"], "latent must be an integer >= 1"),
        (["latent=two"], "latent must be an integer >= 1"),
        (["corruption=pixel_drop", "corruption.p=1.5"], r"corruption.p must be a number in \[0, 1\]"),
        (["corruption=blur", "corruption.sigma=-1"], "corruption.sigma must be a number > 0"),
        (["corruption=blur", "corruption.kernel_size=4"], "corruption.kernel_size must be an odd integer"),
        (["corruption=block_mask", "corruption.size=29"], r"corruption.size must be an integer in \[1, 28\]"),
        (["data=digits", "model=dae", "corruption=block_mask"], r"in \[1, 8\] \(the images are 8x8\)"),
        (["encoder=conv", "encoder.channels=[8,8,8]"], "divisible by 8, but the images are 28x28"),
        (["stage=eval"], "stage=eval needs ckpt=PATH"),
        (["stage=sample", "ckpt=/no/such.ckpt"], "ckpt: no such file"),
        (["stage=fit"], "stage must be one of all, train, eval, sample, impute, anomaly"),
        (["data.batch_size=0"], "data.batch_size must be an integer >= 1"),
        (["data.binarize=always"], "data.binarize must be one of none, dynamic, static"),
        (["eval.iwae_samples=-1"], "eval.iwae_samples must be an integer >= 0"),
        (["eval.iwae_chunk=0"], "eval.iwae_chunk must be an integer >= 1"),
        (["sample.interpolation_steps=0"], "sample.interpolation_steps must be an integer >= 1"),
        (["model=beta_vae", "model.beta=-1"], "model.beta must be a number >= 0"),
        (["model.kl_warmup_epochs=-2"], "model.kl_warmup_epochs must be a number >= 0"),
        (["model.free_bits=nan"], "model.free_bits must be a number >= 0"),
        (["model.estimator=gumbel"], "model.estimator must be one of reparam, reinforce"),
        (["model=vae_mcmc", "model.mcmc_steps=-1"], "model.mcmc_steps must be an integer >= 0"),
        (
            ["model=vae_mcmc", "model.target_accept=1"],
            "model.target_accept must be null or a number strictly between 0 and 1",
        ),
        (["model=vae_mcmc", "model.step_size=0"], "model.step_size must be a number > 0"),
        (["prior=student_t", "prior.df=0"], "prior.df must be a number > 0"),
        (["model=ae", "prior=student_t"], "a deterministic autoencoder has no prior"),
        (["model=dae", "posterior=planar"], "a deterministic autoencoder has no posterior"),
        (["posterior=iaf", "posterior.hidden=0"], "posterior.hidden must be an integer >= 1"),
        (["posterior=planar", "posterior.flows=2.5"], "posterior.flows must be an integer >= 1"),
        (["posterior=planar", "model.free_bits=0.5"], "a flow trains with model.free_bits=0"),
        (["posterior=iaf", "model.estimator=reinforce"], "model.estimator=reparam"),
        (["posterior=metflow", "posterior.steps=5"], "posterior.steps must be an integer in \\[1, 4\\]"),
        (["posterior=metflow", "model.free_bits=0.5"], "a flow trains with model.free_bits=0"),
        (["model=ae", "posterior=metflow"], "a deterministic autoencoder has no posterior"),
        (["model=vae_mcmc", "model.mcmc_kernel=gibbs"], "model.mcmc_kernel must be one of"),
        (["eval.ais_kernel=nuts"], "eval.ais_kernel must be one of"),
        (["eval.ais_temperatures=-1"], "eval.ais_temperatures must be an integer >= 0"),
        (["eval.ais_chains=0"], "eval.ais_chains must be an integer >= 1"),
        (["diagnostics.gradient_variance_samples=1"], "must be 0 \\(off\\) or an integer >= 2"),
        (["compile=yes"], "compile must be true or false"),
        (["steps_per_execution=0"], "steps_per_execution must be an integer >= 1"),
        (["trainer.limit_train_batches=1.5"], "limit_train_batches must be null, a number of batches"),
        (
            ["trainer.gradient_clip_val=-1"],
            "gradient_clip_val must be null or a number >= 0",
        ),
        (["trainer.gradient_clip_algorithm=max"], "gradient_clip_algorithm must be one of norm, value"),
        (["trainer.gradient_clip_algorithm=percentile"], r"give a number in \(0, 100\], e.g. 99; got None"),
        (
            ["trainer.gradient_clip_algorithm=percentile", "trainer.gradient_clip_val=150"],
            "gradient_clip_val-th percentile",
        ),
        (
            [
                "trainer.gradient_clip_algorithm=percentile",
                "trainer.gradient_clip_val=99",
                "cuda_graphs=true",
            ],
            "percentile records each step's norm .* set cuda_graphs=false",
        ),
        (["trainer.accumulate_grad_batches=4"], "trainer.accumulate_grad_batches is not supported"),
        (["trainer.val_check_interval=100"], "val_check_interval=100 must be a multiple of steps_per_ex"),
        (["trainer.val_check_interval=100"], r"steps_per_execution=8 \(.*\): give 96 or 104, a fraction"),
        (
            ["trainer.val_check_interval=0"],
            "val_check_interval must be null, a number of steps >= 1 or a fraction",
        ),
        (["stage=anomaly"], "stage=anomaly needs data.normal_class=K"),
        (["ckpt="], r"ckpt= is empty: give ckpt=PATH \(a checkpoint or a run directory\), or leave it out"),
        (  # KEY= reads as "", which Path takes for the working directory
            ["data=image_folder", "data.source.path="],
            r"data.source.path must be a path \(empty, it would be the working directory\), got ''",
        ),
        (["data=mnist", "data.source.data_dir="], "data.source.data_dir must be a path "),
        (
            ["data=image_folder", "data.source.path=x", "data.source.cache_dir="],
            "cache_dir must be a path or null",
        ),
        (["~callbacks.model_checkpoint"], "callbacks: model_checkpoint is required"),
        (["data.normal_class=-1"], "data.normal_class must be null or a class label"),
        (["impute.rates=[0.5,1.0]"], "impute.rates must be a list of numbers strictly between 0 and 1"),
        (["data=digits", "impute.block_size=9"], r"impute.block_size must be an integer in \[1, 8\]"),
        (["impute.iterations=0"], "impute.iterations must be an integer >= 1"),
        (["anomaly.iwae_samples=-1"], "anomaly.iwae_samples must be an integer >= 0"),
        (["anomaly.neighbours=-1"], "anomaly.neighbours must be an integer >= 0"),
        (["anomaly.neighbour_references=0"], "anomaly.neighbour_references must be null or an integer >= 1"),
        (  # a path left unset: what it names
            ["data=image_folder"],
            "data.source.path must be set to the folder that holds the images: add data.source.path=DIR",
        ),
        (
            ["data=celeba64"],
            "data.source.path must be set to CelebA's folder img_align_celeba, of .*: add data.source.path=",
        ),
        (["data=csv"], "data.source.path must be set to the CSV file: add data.source.path=FILE.csv"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(composed(*overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model=vqvae", "encoder=mlp"],
            "encoder: model=vqvae needs a grid of codes: use encoder=conv or encoder=resnet",
        ),
        (
            ["model=vae2", "prior=vamp"],
            "prior: model=vae2 has its own prior, p(z2) p(z1 | z2); use prior=gaussian",
        ),
        (
            ["model=iwae", "model.beta=2"],
            "model.beta: model=iwae trains the IWAE bound itself; leave beta unset",
        ),
        (
            ["prior=vamp", "model.free_bits=0.5"],
            "model.free_bits: the VampPrior's KL does not split into dimensions; set 0",
        ),
    ],
)
def test_a_model_that_refuses_its_parts_is_refused_before_the_run_starts(
    overrides, message, tmp_path, capsys, refuse_to_run
):
    """The models' own refusals come from building the model on the meta device with torch alone, before the
    run (Lightning, the data) starts: a run that started fails the test."""
    run_dir = tmp_path / "run"
    assert main_in_process("data=digits", *overrides, f"hydra.run.dir={run_dir}") == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"vae-run: error: {message}"]
    assert not run_dir.exists()


def test_validation_does_not_import_torch():
    code = "import sys, vaerun.core.checks, vaerun.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_compose_gives_the_config_a_command_runs_without_importing_torch():
    code = (
        "import sys, vaerun; c = vaerun.compose(['model=ae', 'latent=8', 'data.batch_size=${latent}']); "
        "print(c['model']['_target_'], c['data']['batch_size'], 'hydra' in c, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["vaerun.models.autoencoders.Autoencoder", "8", "False", "False"]
    with pytest.raises(TypeError, match=r"not one string"):
        vaerun.compose("model=ae")
    with pytest.raises(ConfigError, match=r"^latent must be"):
        vaerun.compose(["latent=0"])
    assert vaerun.compose(["latent=0"], check=False)["latent"] == 0


def test_the_shared_names_are_those_of_the_things_they_name():
    from vaerun.core.names import KERNEL_NAMES, STAGES
    from vaerun.models.mcmc import KERNELS
    from vaerun.stages.pipeline import STAGE_STEPS

    assert tuple(STAGE_STEPS) == STAGES
    assert tuple(sorted(KERNELS)) == KERNEL_NAMES


def test_an_error_is_one_line_whatever_line_breaks_a_quoted_library_message_held(capsys):
    from vaerun.core.errors import ErrorExit, exit_with_error

    with pytest.raises(ErrorExit) as exit:
        exit_with_error("latent: Interpolation key 'nope' not found\n    full_key: latent\n", status=2)
    said = capsys.readouterr().err
    assert said == "vae-run: error: latent: Interpolation key 'nope' not found full_key: latent\n"
    assert exit.value.code == 2 and "\n" not in exit.value.message
