"""The run's assembly: what a library refuses while the run is built is named by its config key."""

import pytest
from hydra.utils import instantiate

from vaerun.stages.assembly import refusal

CONFIG = {
    "data": {
        "_target_": "vaerun.data.datamodule.ImageDataModule",
        "source": {"_target_": "vaerun.data.DigitsSource", "bogus": 1},
    },
    "encoder": {"_target_": "vaerun.models.networks.MLP", "activation": {"_target_": "torch.nn.Nope"}},
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "bogus": 1},
}


def refused(build, cfg, within=""):
    with pytest.raises(Exception) as caught:
        build()
    return str(refusal(caught.value, cfg, within))


def test_the_deepest_node_whose_target_the_message_names_is_the_key():
    message = refused(lambda: instantiate(CONFIG["data"]), CONFIG, "data")
    assert message == "data.source: DigitsSource.__init__() got an unexpected keyword argument 'bogus'"
    message = refused(lambda: instantiate(CONFIG["encoder"]), CONFIG)
    assert message.startswith("encoder.activation: Error loading 'torch.nn.Nope': ")


def test_a_refusal_by_the_library_itself_names_the_class_it_came_from():
    import torch

    make = instantiate(CONFIG["optimizer"])
    message = refused(lambda: make([torch.zeros(1, requires_grad=True)]), CONFIG)
    assert message == "optimizer: Adam.__init__() got an unexpected keyword argument 'bogus'"
    assert str(refusal(ValueError("no class named"), CONFIG, "data")).startswith("data: no class named")
