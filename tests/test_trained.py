"""vaerun.load: a trained run's model from Python, checked against the run's own metrics; docs/python.md
run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, read_metrics, vae_run

import vaerun

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vae_run_dir(tmp_path_factory) -> Path:
    """A tiny VAE (latent 2) on the 8x8 digits, tested on its whole test split (180 images)."""
    cwd = tmp_path_factory.mktemp("trained")
    vae_run("model=vae", "latent=2", "data=digits", *TINY, "trainer.max_epochs=3",
            "trainer.limit_test_batches=1.0", "hydra.run.dir=run", cwd=cwd)  # fmt: skip
    return cwd / "run"


@pytest.fixture(scope="module")
def dae_run_dir(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("trained_dae")
    vae_run("model=dae", "corruption=pixel_drop", "latent=3", "data=digits", "stage=train", *TINY,
            "hydra.run.dir=run", cwd=cwd)  # fmt: skip
    return cwd / "run"


def test_a_loaded_vae_scores_the_test_split_as_the_run_did(vae_run_dir):
    model = vaerun.load(vae_run_dir)
    assert model.checkpoint.name.startswith("best-") and not model.network.training
    assert model.config["latent"] == 2 and model.config["data"]["source_used"] == "digits"
    images, labels = model.split("test")
    assert images.dtype == torch.uint8 and images.shape == (180, 1, 8, 8) and len(labels) == 180
    metrics = read_metrics(vae_run_dir)
    # test/loss is one-sample -ELBO averaged over the split; 20 seeds average the sampling noise away
    elbo = torch.stack([model.elbo(images, seed=seed) for seed in range(20)]).mean()
    assert float(-elbo) == pytest.approx(metrics["test/loss"], rel=0.02)
    nll = -model.log_likelihood(images, k=10, seed=0).mean()
    assert float(nll) == pytest.approx(metrics["test/nll_iwae"], rel=0.02)
    assert float(nll) <= float(-elbo) + 0.5  # the IWAE bound is tighter than the ELBO
    assert torch.equal(model.elbo(images[:5], seed=3), model.elbo(images[:5], seed=3))


def test_the_split_of_a_statically_binarised_one_class_run_is_the_data_it_saw(tmp_path):
    data = ["data=digits", "data.binarize=static", "data.normal_class=3"]
    vae_run("model=vae", "latent=2", *data, *TINY, "trainer.max_epochs=3", "trainer.limit_test_batches=1.0",
            "hydra.run.dir=run", cwd=tmp_path)  # fmt: skip
    model = vaerun.load(tmp_path / "run")
    _, train_labels = model.split("train")
    images, labels = model.split("test")
    assert set(train_labels.tolist()) == {3} and len(set(labels.tolist())) == 10  # one class; tested on all
    assert set(images.unique().tolist()) == {0, 255}
    assert torch.equal(model.split("test")[0], images)  # the same fixed draw every time, as the run's
    # the run's test loss is recovered on these images
    metrics = read_metrics(tmp_path / "run")
    elbo = torch.stack([model.elbo(images, seed=seed) for seed in range(20)]).mean()
    assert float(-elbo) == pytest.approx(metrics["test/loss"], rel=0.02)


def test_a_run_on_a_folder_given_by_a_relative_path_reads_its_data_from_any_directory(tmp_path, monkeypatch):
    """...resized as the run resized it, and of the normal class the run named."""
    from PIL import Image
    from skimage import data as skimage_data

    photo = skimage_data.astronaut()
    for i in range(40):
        folder = tmp_path / "photos" / ("cats", "dogs")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[i * 8 : i * 8 + 32, :32]).save(folder / f"{i:02d}.png")
    folder = [
        "data=image_folder",
        "data.source.path=photos",
        "data.source.cache_dir=null",
        "data.image_size=16",
    ]
    vae_run(
        *folder, "data.normal_class=dogs", "latent=2", *TINY, "stage=train", "hydra.run.dir=run", cwd=tmp_path
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = vaerun.load("../run")
    assert model.config["data"]["source"]["path"] == str(tmp_path / "photos")
    images, labels = model.split("train")
    assert images.shape[1:] == (3, 16, 16) and set(labels.tolist()) == {1}  # 32 x 32 files, dogs only
    assert model.encode(images).mean.shape == (len(images), 2)
    assert set(model.split("test")[1].tolist()) == {0, 1}


def test_each_method_takes_uint8_or_floats_one_image_or_a_batch(vae_run_dir):
    model = vaerun.load(vae_run_dir / "checkpoints" / "last.ckpt")
    images, _ = model.split("test")
    floats = images[:6].float() / 255
    encoding = model.encode(images[:6])
    assert encoding.mean.shape == encoding.logvar.shape == (6, 2)
    torch.testing.assert_close(model.encode(floats).mean, encoding.mean)
    torch.testing.assert_close(model.encode(images[0].numpy()).mean, encoding.mean[:1])  # one image, NumPy
    torch.testing.assert_close(model.encode(floats.reshape(6, 64)).mean, encoding.mean)  # flat rows
    torch.testing.assert_close(model.encode(floats[:, 0]).mean, encoding.mean)  # grey without a channel
    decoded = model.decode(encoding.mean)
    assert decoded.shape == (6, 1, 8, 8) and decoded.min() >= 0 and decoded.max() <= 1
    torch.testing.assert_close(model.reconstruct(images[:6]), decoded)
    samples = model.sample(5, temperature=0.5, seed=1)
    assert samples.shape == (5, 1, 8, 8) and torch.equal(samples, model.sample(5, temperature=0.5, seed=1))
    assert torch.equal(model.corrupt(images[:6]), floats)  # trained without a corruption
    with pytest.raises(ValueError, match=r"images of shape \[1, 8, 8\] .* got \[6, 1, 9, 9\]"):
        model.encode(torch.zeros(6, 1, 9, 9))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        model.encode(floats * 255)


def test_arguments_out_of_range_are_one_value_error_naming_the_argument(vae_run_dir):
    model = vaerun.load(vae_run_dir)
    images, _ = model.split("test")
    with pytest.raises(ValueError, match=r"sample: n must be an integer >= 0, got -1"):
        model.sample(-1)
    with pytest.raises(ValueError, match=r"sample: n must be an integer >= 0, got 2\.5"):
        model.sample(2.5)
    with pytest.raises(ValueError, match=r"sample: temperature must be a number > 0, got 0"):
        model.sample(2, temperature=0)
    with pytest.raises(ValueError, match=r"log_likelihood: k must be an integer >= 1, got 0"):
        model.log_likelihood(images[:2], k=0)
    with pytest.raises(ValueError, match=r"decode: codes of shape \(N, 2\) or \(2,\) expected, got \[2, 3\]"):
        model.decode(torch.zeros(2, 3))
    assert model.decode(torch.zeros(2)).shape == (1, 1, 8, 8)  # one code
    with pytest.raises(ValueError, match="images hold NaN"):
        model.elbo(images[:2].float().div(255).index_fill(2, torch.tensor([0]), float("nan")))
    assert model.sample(0).shape == (0, 1, 8, 8)
    with pytest.raises(ValueError, match=r"a pair of tensors: split\(\) gives \(images, labels\)"):
        model.encode(model.split("test"))
    with pytest.raises(ValueError, match="images as a tensor or NumPy array expected, got str"):
        model.reconstruct("digits.png")


def test_impute_fills_only_the_missing_pixels_and_beats_a_blank(vae_run_dir):
    model = vaerun.load(vae_run_dir)
    images, _ = model.split("test")
    missing = torch.zeros_like(images, dtype=torch.bool)
    missing[..., 2:6, 2:6] = True  # the middle of each digit, where its strokes are
    filled = model.impute(images, missing, iterations=5, seed=0)
    truth = images.float() / 255
    assert torch.equal(filled[~missing], truth[~missing])  # what was seen stays as it was
    assert torch.equal(filled, model.impute(images, missing, iterations=5, seed=0))
    # the model's guess is nearer the hidden strokes than a blank; a fill in the wrong units is not
    assert (filled - truth)[missing].square().mean() < 0.5 * truth[missing].square().mean()
    # NaN marks a missing value as the mask does
    assert torch.equal(filled, model.impute(truth.masked_fill(missing, float("nan")), iterations=5, seed=0))
    with pytest.raises(ValueError, match=r"impute: missing must be a bool mask of x.s shape \[180, 1, 8"):
        model.impute(images, missing[:, :, :4])
    with pytest.raises(ValueError, match="impute: iterations must be an integer >= 1, got 0"):
        model.impute(images, missing, iterations=0)
    with pytest.raises(ValueError, match=r"impute_table: the model was not trained on a table \(data=csv\)"):
        model.impute_table(pd.DataFrame({"a": [1.0]}))


def test_a_dae_corrupts_as_trained_samples_from_fitted_codes_and_has_no_density(dae_run_dir):
    model = vaerun.load(dae_run_dir)
    assert not model.is_variational and model.latent_dim == 3
    images, _ = model.split("train")
    corrupted = model.corrupt(images[:50], seed=0)
    hidden = corrupted == 0
    assert hidden.float().mean() > 0.1 and torch.equal(corrupted, model.corrupt(images[:50], seed=0))
    assert model.encode(images[:4]).logvar is None
    with pytest.raises(ValueError, match="pass codes="):
        model.sample(4)
    assert model.sample(4, codes=model.encode(images).mean, seed=0).shape == (4, 1, 8, 8)
    with pytest.raises(TypeError, match="defines no density"):
        model.elbo(images[:2])


def test_a_missing_path_or_a_file_that_is_not_a_checkpoint_is_one_clear_exception(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vaerun\.load: no such file or run directory"):
        vaerun.load(tmp_path / "nothing.ckpt")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(
        ValueError, match=r"notes\.ckpt is not a vaerun checkpoint \(not a file torch.save wrote"
    ):
        vaerun.load(tmp_path / "notes.ckpt")  # not "it holds code": its bytes are no pickle at all
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match=r"other\.ckpt is not a vaerun checkpoint \(no model hyperp"):
        vaerun.load(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="holds no checkpoints"):
        vaerun.load(tmp_path)


def test_docs_python_md_runs_as_written_without_lightning(vae_run_dir, tmp_path):
    """The page's first example, with its run directory pointed at a real run: it loads, plots and
    scores, and neither Lightning nor torchvision is imported on the way."""
    page = (ROOT / "docs" / "python.md").read_text()
    example = re.findall(r"```python\n(.*?)```", page, re.S)[0]
    assert '"outputs/2026-11-30/12-00-00"' in example
    script = example.replace('"outputs/2026-11-30/12-00-00"', repr(str(vae_run_dir)))
    script += "\nimport sys\nassert not {'pytorch_lightning', 'torchvision'} & set(sys.modules)\n"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "TrainedModel(VariationalAutoencoder, latent 2, images [1, 8, 8]" in result.stdout
    assert (tmp_path / "codes.png").stat().st_size > 0 and (tmp_path / "interpolation.png").is_file()


def test_import_vaerun_loads_no_torch():
    code = "import sys, vaerun; assert 'torch' not in sys.modules; print(vaerun.load.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "vaerun.api.trained"


def test_numpy_arrays_come_back_as_tensors(vae_run_dir):
    model = vaerun.load(vae_run_dir)
    images, _ = model.split("val")
    reconstructed = model.reconstruct(np.asarray(images[:3]))
    assert isinstance(reconstructed, torch.Tensor) and reconstructed.shape == (3, 1, 8, 8)
