import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import vaerun
from vaerun.core.run_files import data_config
from vaerun.data import (
    CSVSource,
    DigitsSource,
    FashionMNISTSource,
    MNIST5kSource,
    MNISTSource,
    TensorBatches,
    observed_cells,
    split_off,
    to_unit_float,
)
from vaerun.data.batches import BatchGroup, limited_batch_count
from vaerun.data.datamodule import ImageDataModule
from vaerun.data.splits import Split, Splits
from vaerun.stages.assembly import _record_source


def assert_disjoint_and_complete(splits, total):
    assert len(splits.train) + len(splits.val) + len(splits.test) == total
    for split in (splits.train, splits.val, splits.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.ndim == 4


def test_split_off_is_deterministic_and_disjoint():
    images = torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1, 1)
    labels = torch.arange(100)
    a, b, rest = split_off(images, labels, [10, 20], seed=3)
    again = split_off(images, labels, [10, 20], seed=3)
    assert torch.equal(a.labels, again[0].labels)
    assert (len(a), len(b), len(rest)) == (10, 20, 70)
    assert sorted(torch.cat([a.labels, b.labels, rest.labels]).tolist()) == list(range(100))
    assert not torch.equal(a.labels, split_off(images, labels, [10, 20], seed=4)[0].labels)


def test_digits_are_8x8_in_unit_range():
    splits = DigitsSource().load()
    assert_disjoint_and_complete(splits, 1797)
    assert (len(splits.val), len(splits.test)) == (180, 180)
    assert splits.train.images.shape[1:] == (1, 8, 8)
    x = to_unit_float(splits.train.images)
    assert x.min() == 0 and x.max() == 1


def test_mnist5k_is_shuffled_before_the_split():
    """The file is sorted by label: an unshuffled split would put only 9s in the test set."""
    splits = MNIST5kSource().load()
    assert_disjoint_and_complete(splits, 5000)
    assert splits.train.images.shape[1:] == (1, 28, 28)
    for split in (splits.val, splits.test):
        counts = torch.bincount(split.labels, minlength=10)
        assert (counts > 20).all(), counts


def test_mnist_falls_back_to_mnist5k_when_the_download_fails(tmp_path, monkeypatch, caplog):
    def offline(self, download):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(MNISTSource, "_load", offline)
    splits = MNISTSource(str(tmp_path), fallback=MNIST5kSource()).load()
    assert splits.source == "mnist5k"
    assert "falling back to mnist5k" in caplog.text


def test_a_run_whose_mnist_fell_back_is_found_again_as_the_mnist5k_it_read(tmp_path, monkeypatch):
    """The run's saved config names the fallback as its source: its data found again (``ckpt=RUN`` without
    a data option, vaerun.load's ``split``) is mnist5k's split, not full MNIST where a download works."""
    monkeypatch.setattr(MNISTSource, "_load", lambda self, download: (_ for _ in ()).throw(RuntimeError("x")))
    config = vaerun.compose(["data=mnist", f"data.source.data_dir={tmp_path / 'cache'}"])
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(config["data"])
    assert datamodule.source_used == "mnist5k"
    _record_source(run_dir, datamodule)
    data = data_config(run_dir)
    assert data["source"] == config["data"]["source"]["fallback"]
    found_again = instantiate(data["source"]).load()  # MNISTSource._load is still offline: no fallback taken
    assert found_again.source == "mnist5k"
    assert torch.equal(found_again.test.images, datamodule.splits.test.images)


def test_mnist_without_fallback_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(MNISTSource, "_load", lambda self, download: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        MNISTSource(str(tmp_path)).load()


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian package dataset-fashion-mnist missing",
)
def test_fashion_mnist_reads_the_debian_files_without_downloading(tmp_path):
    splits = FashionMNISTSource(str(tmp_path), system_dir="/usr/share/datasets/fashion-mnist").load()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert splits.source == "fashion_mnist"
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]


def test_tensor_batches_cover_the_split_in_a_fresh_order_each_epoch():
    split = split_off(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50), [], seed=0)[0]
    batches = TensorBatches(split, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 4
    first = torch.cat([labels for _, labels in batches])
    second = torch.cat([labels for _, labels in batches])
    assert sorted(first.tolist()) == sorted(second.tolist()) == sorted(split.labels.tolist())
    assert not torch.equal(first, second)
    in_order = torch.cat([labels for _, labels in TensorBatches(split, batch_size=16)])
    assert torch.equal(in_order, split.labels)


def test_groups_hold_the_same_batches_in_the_same_order():
    split = split_off(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50), [], seed=0)[0]
    single = TensorBatches(split, batch_size=8, generator=torch.Generator().manual_seed(3))
    grouped = TensorBatches(split, batch_size=8, generator=torch.Generator().manual_seed(3), group=3)
    assert (len(single), len(grouped), grouped.num_batches) == (7, 3, 7)
    groups = list(grouped)
    assert all(isinstance(group, BatchGroup) for group in groups)
    assert [len(group) for group in groups] == [3, 3, 1]
    flat = [labels for group in groups for _, labels in group]
    assert [labels.tolist() for labels in flat] == [labels.tolist() for _, labels in single]


@pytest.mark.parametrize(
    ("limit", "batches"), [(None, 7), (5, 5), (100, 7), (0.5, 3), (1.0, 7), (0.01, 1), (0.0, 0), (0, 0)]
)
def test_the_training_limit_counts_batches_as_lightning_does(limit, batches):
    assert limited_batch_count(7, limit) == batches
    split = split_off(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50), [], seed=0)[0]
    grouped = TensorBatches(split, batch_size=8, generator=torch.Generator(), group=2, max_batches=limit)
    assert sum(len(group) for group in grouped) == grouped.num_batches == batches
    assert len(grouped) == -(-batches // 2)


def test_datamodule_refuses_a_shape_that_does_not_match_the_config():
    from vaerun.core.checks import ConfigError

    datamodule = ImageDataModule(DigitsSource(), image_shape=[1, 28, 28])
    with pytest.raises(ConfigError, match="image_shape"):
        datamodule.setup()


def test_datamodule_shuffles_reproducibly_by_seed():
    def first_batch(seed):
        datamodule = ImageDataModule(DigitsSource(), image_shape=[1, 8, 8], batch_size=8, seed=seed)
        datamodule.setup()
        return next(iter(datamodule.train_dataloader()))[1]

    assert torch.equal(first_batch(1), first_batch(1))
    assert not torch.equal(first_batch(1), first_batch(2))


def test_dynamic_binarization_resamples_every_draw_and_static_is_fixed():
    dynamic = ImageDataModule(DigitsSource(), image_shape=[1, 8, 8], binarize="dynamic")
    dynamic.setup()
    images = dynamic.splits.test.images
    first, second = dynamic.transform(images), dynamic.transform(images)
    assert set(first.unique().tolist()) <= {0.0, 1.0} and not torch.equal(first, second)
    grey = to_unit_float(images)
    assert (first - grey).mean().abs() < 0.01  # Bernoulli(pixel): unbiased

    static = ImageDataModule(DigitsSource(), image_shape=[1, 8, 8], binarize="static")
    static.setup()
    x = static.transform(static.splits.test.images)
    assert set(x.unique().tolist()) <= {0.0, 1.0} and torch.equal(
        x, static.transform(static.splits.test.images)
    )


def test_dequantization_spreads_training_levels_over_their_bins_and_leaves_evaluation_alone(tmp_path):
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):  # what training and validation steps are handed, through a real fit
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))
            self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

        def training_step(self, batch, batch_idx):
            self.seen["train"].append(batch[0])
            return self.weight * batch[0].mean()

        def validation_step(self, batch, batch_idx):
            self.seen["val"].append(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    datamodule = ImageDataModule(DigitsSource(), image_shape=[1, 8, 8], batch_size=32, dequantize=True)
    module = Recorder()
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)
    levels = datamodule.splits.train.images.float()
    train = torch.cat(module.seen["train"])
    assert len(train) == 64
    assert set(to_unit_float(datamodule.splits.val.images[:32]).unique().tolist()) == set(
        module.seen["val"][0].unique().tolist()
    )  # validation sees the levels k / 255
    bins = (train * 256).floor()  # each training value lies in its own level's bin [k / 256, (k + 1) / 256)
    assert set(bins.unique().tolist()) <= set(levels.unique().tolist())
    assert len(train.unique()) > len(bins.unique())  # and is spread inside it
    offsets = train * 256 - bins
    assert 0.4 < offsets.mean() < 0.6  # uniform over the bin


def test_dequantization_is_refused_beside_binarization_and_on_tables(tmp_path):
    with pytest.raises(ValueError, match=r"data\.dequantize=true .* data\.binarize=dynamic"):
        ImageDataModule(DigitsSource(), image_shape=[1, 8, 8], binarize="dynamic", dequantize=True)
    with pytest.raises(ValueError, match=r"data\.dequantize must be true or false"):
        ImageDataModule(DigitsSource(), image_shape=[1, 8, 8], dequantize="yes")
    table = tmp_path / "table.csv"
    table.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(20)))
    with pytest.raises(ValueError, match=r"data\.dequantize=true is for 8-bit images"):
        ImageDataModule(CSVSource(table), image_shape=None, dequantize=True).setup()


def test_unknown_binarization_is_refused():
    with pytest.raises(ValueError, match=r"data\.binarize must be one of none, dynamic, static"):
        ImageDataModule(DigitsSource(), image_shape=[1, 8, 8], binarize="yes")


def test_each_process_of_a_distributed_run_gets_its_own_equal_shard():
    split = split_off(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50), [], seed=0)[0]
    shards = []
    for rank in range(3):  # every process draws the same permutation from the same seed
        batches = TensorBatches(split, 8, torch.Generator().manual_seed(5), rank=rank, world_size=3)
        shards.append(torch.cat([labels for _, labels in batches]))
        assert len(batches) == 3
    assert [len(s) for s in shards] == [17, 17, 17]  # 50 padded to 51 by wrapping around
    assert set(torch.cat(shards).tolist()) == set(range(50))
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_one_class_training_keeps_every_class_in_the_test_split():
    datamodule = ImageDataModule(DigitsSource(), [1, 8, 8], normal_class=7)
    datamodule.setup()
    splits = datamodule.splits
    assert set(splits.train.labels.tolist()) == {7} and set(splits.val.labels.tolist()) == {7}
    assert len(splits.train) > 100
    assert set(splits.test.labels.tolist()) == set(range(10)) and len(splits.test) == 180


def test_a_class_is_named_by_its_label_or_its_name_where_the_source_names_its_classes():
    from vaerun.core.checks import ConfigError
    from vaerun.data.splits import normal_label

    labelled = Split(torch.zeros(2, 1, 1, 1), torch.tensor([0, 1]))
    named = Splits(labelled, labelled, labelled, source="image_folder:pets", classes=("cats", "dogs"))
    assert normal_label("dogs", named) == 1 and normal_label(1, named) == 1
    with pytest.raises(
        ConfigError,
        match=r"=birds: image_folder:pets has no class of that name; its classes are 0: cats, 1: dogs$",
    ):
        normal_label("birds", named)
    with pytest.raises(
        ConfigError, match=r"=cats: digits has no class of that name; it names no classes: give the label"
    ):
        normal_label("cats", Splits(labelled, labelled, labelled, source="digits"))


@pytest.fixture
def wine_csv(tmp_path):
    """scikit-learn's bundled wine table (178 real rows, 13 features, 3 classes) as a CSV file, with 5% of
    its cells emptied at random: missing values as they come in a real file."""
    from sklearn.datasets import load_wine

    table = load_wine(as_frame=True).frame
    features = table.columns[:-1]
    values = table[features].to_numpy().copy()
    values[np.random.default_rng(0).random(values.shape) < 0.05] = np.nan
    table[features] = values
    path = tmp_path / "wine.csv"
    table.to_csv(path, index=False)
    return path


def test_a_csv_file_is_split_standardised_and_keeps_its_missing_cells(wine_csv):
    splits = CSVSource(str(wine_csv), label_column="target").load()
    assert splits.source == "csv:wine.csv"
    assert [len(s) for s in splits[:3]] == [142, 18, 18]
    assert splits.train.images.shape[1:] == (1, 1, 13) and splits.train.images.dtype == torch.float32
    train = splits.train.images.flatten(1)
    torch.testing.assert_close(torch.nanmean(train, dim=0), torch.zeros(13), atol=1e-5, rtol=0)
    std = torch.nanmean(train.square(), dim=0).sqrt()
    torch.testing.assert_close(std, torch.ones(13), atol=1e-5, rtol=0)
    missing = sum(int(torch.isnan(s.images).sum()) for s in splits[:3])
    assert 0.03 * 178 * 13 < missing < 0.07 * 178 * 13
    assert set(torch.cat([s.labels for s in splits[:3]]).tolist()) == {0, 1, 2}


def test_the_data_module_fills_missing_cells_with_the_column_mean_and_takes_the_shape_from_the_file(wine_csv):
    datamodule = ImageDataModule(CSVSource(str(wine_csv), "target"), image_shape=None, batch_size=16)
    datamodule.setup()
    assert datamodule.image_shape == (1, 1, 13) and not datamodule.unit_range
    raw = datamodule.splits.train.images
    x = datamodule.transform(raw)
    assert not torch.isnan(x).any() and torch.all(x[torch.isnan(raw)] == 0)
    assert torch.equal(observed_cells(raw), ~torch.isnan(raw))
    assert observed_cells(torch.zeros(2, 1, 4, 4, dtype=torch.uint8)).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"path": "/no/such.csv"}, "data.source.path: no such file"),
        ({"label_column": "colour"}, "has no column 'colour'"),
    ],
)
def test_csv_mistakes_name_the_key(wine_csv, change, message):
    from vaerun.core.checks import ConfigError

    with pytest.raises(ConfigError, match=message):
        CSVSource(**{"path": str(wine_csv), **change}).load()


def test_a_file_that_is_no_table_is_refused_on_one_line(tmp_path):
    from vaerun.core.checks import ConfigError

    (tmp_path / "ragged.csv").write_text("a\n1\n2,3,4\n")  # pandas's own message ends in a line break
    refusal = r"is not a readable CSV file \(Error tokenizing data.*saw 3\)$"
    with pytest.raises(ConfigError, match=refusal) as err:
        CSVSource(str(tmp_path / "ragged.csv")).load()
    assert "\n" not in str(err.value)


def test_text_columns_are_refused(tmp_path):
    from vaerun.core.checks import ConfigError

    (tmp_path / "t.csv").write_text("a,b\n1,x\n2,y\n")
    with pytest.raises(ConfigError, match=r"columns b of t\.csv are not numeric"):
        CSVSource(str(tmp_path / "t.csv")).load()


@pytest.mark.parametrize(("cell", "shown"), [("inf", "inf"), ("-inf", "-inf"), ("1e39", "1e+39")])
def test_an_infinite_cell_is_refused_naming_its_column_and_row(wine_csv, cell, shown):
    from vaerun.core.checks import ConfigError

    # standardised, one infinite cell would make its whole column NaN: every cell of it read as missing
    lines = wine_csv.read_text().splitlines()
    header, row = lines[0].split(","), lines[5].split(",")
    row[header.index("magnesium")] = cell
    lines[5] = ",".join(row)
    wine_csv.write_text("\n".join(lines) + "\n")
    first = rf"the first in column magnesium, row 5 after the header: {re.escape(shown)}"
    refusal = rf"wine\.csv holds 1 infinite or too large values \({first}\)"
    with pytest.raises(ConfigError, match=refusal):
        CSVSource(str(wine_csv), label_column="target").load()


def test_integer_labels_are_kept_and_text_labels_become_codes(tmp_path):
    rows = range(20)
    (tmp_path / "graded.csv").write_text("x,grade\n" + "".join(f"{i},{3 + i % 2}\n" for i in rows))
    grades = CSVSource(str(tmp_path / "graded.csv"), "grade", 0.0, 0.0).load().train.labels
    assert set(grades.tolist()) == {3, 4}  # data.normal_class=3 means grade 3
    (tmp_path / "kinds.csv").write_text("x,kind\n" + "".join(f"{i},{'ba'[i % 2]}\n" for i in rows))
    kinds = CSVSource(str(tmp_path / "kinds.csv"), "kind", 0.0, 0.0).load().train
    assert set(kinds.labels.tolist()) == {0, 1} and kinds.images.shape[1:] == (1, 1, 1)
