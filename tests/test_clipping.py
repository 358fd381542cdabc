"""Adaptive gradient clipping (vaerun.training.clipping) against numpy's percentile and the norms by hand."""

import math

import numpy as np
import pytest
import torch

from vaerun.training.clipping import PercentileClipping, clip_to_norm_, percentile_limit


@pytest.mark.parametrize("percentile", [10, 50, 90, 99, 100])
def test_the_limit_is_numpys_percentile_of_the_recorded_norms_and_ignores_empty_slots(percentile):
    recorded = torch.rand(37, dtype=torch.float64) * 100
    slots = torch.cat([recorded, torch.full((63,), math.nan, dtype=torch.float64)])
    expected = np.percentile(recorded.numpy(), percentile)
    assert percentile_limit(slots, percentile).item() == pytest.approx(expected, rel=1e-12)


def test_nothing_recorded_means_no_limit():
    assert percentile_limit(torch.full((10,), math.nan), 99).item() == math.inf


def test_clipping_scales_gradients_above_the_limit_to_it_and_leaves_those_below():
    gradients = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]  # joint norm 5
    norm = clip_to_norm_(gradients, torch.tensor(2.5))
    assert norm.item() == pytest.approx(5.0)
    assert torch.cat([g.flatten() for g in gradients]).norm().item() == pytest.approx(2.5, rel=1e-5)
    assert gradients[0][0].item() / gradients[1][0, 0].item() == pytest.approx(3 / 4)  # the direction kept
    below = [torch.tensor([0.3, 0.4])]
    clip_to_norm_(below, torch.tensor(2.5))
    assert below[0].tolist() == pytest.approx([0.3, 0.4])


def parameter_with_gradient(gradient: list[float]) -> torch.nn.Parameter:
    parameter = torch.nn.Parameter(torch.zeros(len(gradient)))
    parameter.grad = torch.tensor(gradient)
    return parameter


def test_each_step_is_clipped_at_the_percentile_of_the_norms_before_it_which_are_recorded_unclipped():
    clipping = PercentileClipping(percentile=50, window=4)
    norms_before = []
    for gradient in ([3.0, 4.0], [6.0, 8.0], [30.0, 40.0], [0.6, 0.8], [1.0, 0.0]):
        parameter = parameter_with_gradient(gradient)
        norms_before.append(clipping.clip_([parameter]).item())
        if len(norms_before) == 1:
            assert parameter.grad.norm().item() == pytest.approx(5.0)  # nothing before: not clipped
        if len(norms_before) == 3:  # 50 against the median of 5 and 10
            assert parameter.grad.norm().item() == pytest.approx(7.5, rel=1e-5)
    assert norms_before == pytest.approx([5, 10, 50, 1, 1])
    # a window of 4: the fifth norm took the first's slot
    assert sorted(clipping.norms.tolist()) == pytest.approx([1, 1, 10, 50])
    assert clipping.steps == 5


def test_a_non_finite_norm_is_not_recorded_and_the_state_survives_a_checkpoint():
    clipping = PercentileClipping(percentile=99)
    clipping.clip_([parameter_with_gradient([3.0, 4.0])])
    clipping.clip_([parameter_with_gradient([math.inf, 0.0])])
    assert clipping.steps == 2 and torch.isnan(clipping.norms[1])
    restored = PercentileClipping(percentile=99)
    restored.load_state_dict(clipping.state_dict())
    assert restored.steps == 2 and percentile_limit(restored.norms, 99).item() == pytest.approx(5.0)
