"""The scripts run on tiny sizes and print what they promise (their numbers are measured, not tested);
each as ``python SCRIPT`` would run it, forked from the tests' warmed-up server (conftest.run_script)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_its_table_and_the_floor_and_vaerun_agree_on_the_elbo():
    args = [
        "--data",
        "digits",
        "--epochs",
        "2",
        "--repeats",
        "1",
        "--limit-batches",
        "4",
        "--matmul-size",
        "128",
        "--methods",
        "abcl",
        "--precision",
        "32-true,bf16-mixed",
        "--ais-temperatures",
        "0",
        "--iwae-samples",
        "0",
    ]
    out = run_script(ROOT / "scripts" / "bench.py", *args).stdout
    fp32, bf16 = out.split("\nbf16-mixed\n")
    rows = {line[0]: line.split() for line in fp32.splitlines() if line[:2] in ("a ", "b ", "c ", "d ", "l ")}
    assert set(rows) == {"a", "b", "c", "d", "l"}
    assert "b/a = " in fp32 and "b/c = " in fp32 and "l/a = " in fp32 and "peak memory" in out
    assert rows["a"][-1] == rows["b"][-1]  # same math, same seed: the same final training ELBO
    assert "largest |ELBO a - ELBO b| over seeds: 0.0000 nats" in fp32
    assert "b / fp32 a = " in bf16  # the bf16 run is compared with the fp32 floor
    assert "\neval: " not in out  # both estimates' measurements skipped


def paired_ratio(out: str, line_start: str, label: str) -> tuple[float, float, float]:
    """(median, lower quartile, upper quartile) of the ratio bench.py prints on its line starting so."""
    line = next(line for line in out.splitlines() if line.startswith(line_start))
    pairs = r" ([\d.]+) \(median of 15 back-to-back pairs, quartiles ([\d.]+)-([\d.]+)\)"
    found = re.search(label + pairs, line)
    assert found is not None, line
    median, low, high = map(float, found.groups())
    return median, low, high


def test_bench_measures_a_conv_vae_against_its_plain_loop_names_the_cpus_bf16_units_and_profiles_eval():
    args = ["--data", "digits", "--encoder", "conv", "--epochs", "2", "--repeats", "1"]
    args += ["--limit-batches", "2", "--matmul-size", "64", "--methods", "ab"]
    args += ["--eval-images", "8", "--iwae-samples", "4", "--ais-temperatures", "1", "--profile-eval"]
    out = run_script(ROOT / "scripts" / "bench.py", *args).stdout
    assert out.startswith("cpu: ") and "bf16 units: " in out.splitlines()[0]
    assert "digits (1x8x8, encoder conv)" in out
    rows = {line[0]: line.split() for line in out.splitlines() if line[:2] in ("a ", "b ")}
    assert rows["a"][-1] == rows["b"][-1]  # the same conv net, math and seed in both loops
    assert float(rows["b"][-3]) > 0  # GFLOP/s counted on the conv net itself
    iwae = paired_ratio(out, "eval: decoder forward ", r"IWAE / decoder")
    ais = paired_ratio(
        out,
        "eval: decoder forward+backward ",
        r"AIS \(1 temperatures, 8 chains, hmc with 5 leapfrog steps\) .* AIS / decoder",
    )
    for median, low, high in (iwae, ais):
        assert 0 < low <= median <= high
    for unit in ("image-sample", "gradient"):  # memory new to the process, per unit of each estimate
        assert float(re.search(rf"\); ([\d.]+) page faults per {unit}$", out, re.MULTILINE).group(1)) >= 0
    profiles = out.split("one IWAE estimate (k=4, 8 images), operators by their own time:")[1]
    iwae_profile, ais_profile = profiles.split("one AIS estimate (1 temperatures, 8 images), operators by")
    for profile in (iwae_profile, ais_profile):  # the decoder's share, among the rest
        assert "aten::_convolution" in profile and "Self CPU" in profile
    assert "convolution_backward" in ais_profile  # AIS takes the log-joint's gradient


def test_read_events_lists_scalars_and_images(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    writer.add_scalar("val/loss", 1.5, 3)
    writer.close()
    out = run_script(ROOT / "scripts" / "read_events.py", tmp_path).stdout
    assert "val/loss" in out and "1.5" in out


def test_the_photo_patches_and_the_data_bench_run_on_small_folders(tmp_path):
    def script(name: str, *args) -> str:
        return run_script(ROOT / "scripts" / name, *args).stdout

    out = script("photo_patches.py", tmp_path / "patches", "--stride", 128)
    assert out.startswith("40 patches of 32 x 32 in ")  # 4 x 5 places in each 427 x 640 photograph
    assert sorted(p.name for p in (tmp_path / "patches").iterdir()) == ["china", "flower"]
    folder = tmp_path / "fashion"
    small = ["--limit", 100, "--repeats", 1, "--epochs", 2, "--limit-batches", 3]
    out = script("bench_data.py", "--folder", folder, *small)
    assert len(list(folder.rglob("*.png"))) == 200  # the first 100 images of each split
    assert "first load: " in out and "cached load: median" in out and "folder / idx = " in out


def test_inference_gaps_fits_each_images_posterior_better_than_the_encoder(tmp_path, monkeypatch, capsys):
    import importlib.util

    from conftest import TINY, vae_run

    spec = importlib.util.spec_from_file_location("inference_gaps", ROOT / "scripts" / "inference_gaps.py")
    inference_gaps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inference_gaps)
    # the Gaussian run is scored at eval (AIS on its first 16 test images, by TINY); the flow only trains
    tiny = ["data=digits", "latent=4", *TINY]
    vae_run(*tiny, "hydra.run.dir=gaussian", cwd=tmp_path)
    vae_run(*tiny, "posterior=planar", "stage=train", "hydra.run.dir=planar", cwd=tmp_path)
    runs = [str(tmp_path / "gaussian"), str(tmp_path / "planar")]
    options = ["--images", "16", "--steps", "60", "--iwae", "20"]
    monkeypatch.setattr(sys, "argv", ["inference_gaps.py", *runs, *options])
    inference_gaps.main()

    table = capsys.readouterr().out.splitlines()
    columns = [cell.strip() for cell in table[1].split("|")[1:-1]]
    rows = [dict(zip(columns, (c.strip() for c in line.split("|")[1:-1]), strict=True)) for line in table[3:]]
    assert [row["run"] for row in rows] == ["gaussian", "planar"]
    for row in rows:
        value = {key: float(cell) for key, cell in row.items() if key != "run" and cell}
        # a barely trained encoder: fitting each image's own posterior raises its ELBO clearly, and each
        # IWAE estimate of -log p(x) lies below its -ELBO
        assert value["amortisation gap"] > 0.2
        assert value["amortised IWAE k=20"] < value["amortised -ELBO"]
        assert value["optimised IWAE k=20"] < value["optimised -ELBO"]
        # AIS where the run scored the same images (the Gaussian's eval), and the approximation gap to it
        assert ("AIS" in value) == (row["run"] == "gaussian")
        if "AIS" in value:
            gap = value["optimised -ELBO"] - value["AIS"]
            assert value["approximation gap (to AIS)"] == pytest.approx(gap, abs=0.011)

    # a path that holds no run: one line and exit 2, before any fitting
    monkeypatch.setattr(sys, "argv", ["inference_gaps.py", runs[0], str(tmp_path / "nothing")])
    with pytest.raises(SystemExit) as exit:
        inference_gaps.main()
    assert exit.value.code == 2 and "no such file or run directory" in capsys.readouterr().err


def test_one_class_neighbours_prints_each_baselines_auroc_per_class(tmp_path):
    """On Fashion-MNIST's class 0 (T-shirts) against the other nine: the Hellinger neighbours above PCA,
    as docs/applications.md reports for every class."""
    script = ROOT / "scripts" / "one_class_neighbours.py"
    output = run_script(script, "--classes", "1", "--data-dir", tmp_path).stdout
    rows = {line.split()[0]: line.split() for line in output.splitlines()[1:]}
    assert set(rows) == {"pca", "euclidean", "hellinger"}
    assert float(rows["hellinger"][1]) > float(rows["pca"][1]) > 0.8
    assert rows["hellinger"][-1] == "1" and rows["pca"][-1] == "0"  # above PCA on 1 class of 1


def test_training_curves_prints_each_epochs_validation_error_and_gradient_norms():
    script = ROOT / "scripts" / "training_curves.py"
    overrides = ["data=digits", "likelihood=gaussian", "likelihood.learn_std=true"]
    output = run_script(script, "--epochs", "2", *overrides).stdout
    pattern = r"epoch (\d): val MSE ([\d.]+), gradient norm median ([\d,]+), largest ([\d,]+) \((\d+) steps\)"
    epochs = [re.fullmatch(pattern, line) for line in output.splitlines()]
    assert [int(found.group(1)) for found in epochs if found] == [1, 2]
    for found in epochs:
        mse, median, largest = float(found.group(2)), *(float(g.replace(",", "")) for g in found.group(3, 4))
        assert 0 < mse < 0.2 and 0 < median <= largest
        assert found.group(5) == "23"  # 1,437 training digits in batches of 64
    # it learns: the second epoch reconstructs the validation digits better than the first
    assert float(epochs[1].group(2)) < float(epochs[0].group(2))
    # and applies the config's gradient clipping, as vae-run does: the same seed learns otherwise
    clipping = ["trainer.gradient_clip_algorithm=percentile", "trainer.gradient_clip_val=10"]
    clipped = run_script(script, "--epochs", "1", *overrides, *clipping).stdout
    first = re.fullmatch(pattern, clipped.splitlines()[-1])
    assert first.group(1) == "1" and first.group(2) != epochs[0].group(2)


def test_bench_process_times_a_whole_vae_run_and_its_ending():
    run = ["data=digits", "latent=2", "stage=train", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
           "trainer.limit_val_batches=1"]  # fmt: skip
    command = [sys.executable, ROOT / "scripts" / "bench_process.py", "--repeats", "1", "--", *run]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[1] == "$ vae-run " + " ".join(run)
    wall, ending = re.findall(r"median ([\d.]+) s \(runs: ([\d.]+)\)", out)
    assert wall[0] == wall[1] and ending[0] == ending[1]  # one run: its median is itself
    assert float(ending[0]) < float(wall[0])
