"""ModelSpec: what defines a model, as building, the LightningModule, checkpoints and vaerun.load take it."""

from vaerun.core.names import DEFAULT_POSTERIOR
from vaerun.core.spec import ModelSpec, conv_depth, current_target
from vaerun.models.autoencoders import VariationalAutoencoder
from vaerun.models.build import build_autoencoder

#: the hyperparameters of a checkpoint written before src/vaerun/ was split by layer (and before the
#: posterior group): every _target_ where the class used to live
EARLIER_CHECKPOINT = {
    "model": {"_target_": "vaerun.autoencoders.VariationalAutoencoder"},
    "encoder": {"_target_": "vaerun.networks.MLP", "hidden": [16]},
    "likelihood": {"_target_": "vaerun.objectives.BernoulliLikelihood"},
    "prior": {"_target_": "vaerun.priors.GaussianPrior"},
    "latent": 2,
}


def test_a_checkpoint_of_an_earlier_layout_builds_the_same_model():
    spec = ModelSpec.from_config(EARLIER_CHECKPOINT, [1, 8, 8])
    assert spec.model["_target_"] == "vaerun.models.autoencoders.VariationalAutoencoder"
    assert spec.likelihood["_target_"] == "vaerun.models.likelihoods.BernoulliLikelihood"
    assert spec.posterior == {"_target_": DEFAULT_POSTERIOR}
    model = build_autoencoder(spec)
    assert isinstance(model, VariationalAutoencoder) and model.latent_dim == 2
    assert current_target("torch.optim.Adam") == "torch.optim.Adam"


def test_the_spec_round_trips_through_a_checkpoints_plain_values():
    spec = ModelSpec.from_config(EARLIER_CHECKPOINT, (1, 8, 8))
    values = spec.as_dict()
    assert values["image_shape"] == [1, 8, 8] and isinstance(values["model"], dict)
    assert ModelSpec.from_config(values, values["image_shape"]) == spec


def test_a_conv_net_halves_while_the_image_stays_even_and_at_least_four_pixels():
    assert [conv_depth((3, side, side)) for side in (7, 8, 28, 32, 64)] == [0, 1, 2, 3, 4]
