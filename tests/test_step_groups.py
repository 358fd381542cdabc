"""Groups of training steps: the Trainer arguments they take over, and the validation interval in items."""

import pytest

from vaerun.core.checks import ConfigError
from vaerun.data.batches import BatchGroup, batches_of, group_size, limited_batch_count
from vaerun.training.step_groups import StepGroups


def test_the_trainer_arguments_counted_in_steps_are_taken_over():
    trainer = {"max_epochs": 3, "limit_train_batches": 5, "gradient_clip_val": 1.0, "limit_val_batches": 2}
    groups, rest = StepGroups.from_trainer_config(4, trainer)
    assert groups == StepGroups(size=4, limit_train_batches=5, gradient_clip_val=1.0)
    assert rest == {"max_epochs": 3, "limit_val_batches": 2}
    assert group_size(4, world_size=1) == 4 and group_size(4, world_size=2) is None  # DDP: single steps
    assert group_size(1, world_size=1) is None


def test_a_group_is_iterated_as_its_batches_and_a_batch_as_itself():
    assert batches_of(BatchGroup([1, 2])) == [1, 2] and batches_of((1, 2)) == [(1, 2)]
    assert [limited_batch_count(10, limit) for limit in (None, 3, 0.25, 0.0, 20)] == [10, 3, 2, 0, 10]


def test_an_integer_validation_interval_is_counted_in_groups_of_steps():
    # 32 steps an epoch in groups of 8: every 16 steps is every 2 groups
    assert StepGroups(8).validation_interval_in_items(16, 32, across_epochs=False) == 2
    assert StepGroups(8).validation_interval_in_items(16, 32, across_epochs=True) == 2
    # a short last group (35 = 4 x 8 + 3) that no interval ends on is harmless: after 24 steps, never 35
    assert StepGroups(8).validation_interval_in_items(24, 35, across_epochs=False) == 3
    assert (
        StepGroups(1).validation_interval_in_items(100, 35, across_epochs=True) == 100
    )  # single steps: as given


@pytest.mark.parametrize(
    ("interval", "steps_per_item", "steps_per_epoch", "across_epochs", "message"),
    [
        (40, 8, 32, False, "val_check_interval=40 is more than an epoch's 32 training steps"),
        (40, 1, 32, False, "val_check_interval=40 is more than an epoch's 32 training steps"),
        (8, 8, 35, False, "validation would run after it as well"),  # after the 5th group, 3 steps long
        (64, 8, 35, True, "set steps_per_execution to a divisor of 35"),  # groups would drift across epochs
    ],
)
def test_an_integer_validation_interval_that_cannot_be_kept_is_refused(
    interval, steps_per_item, steps_per_epoch, across_epochs, message
):
    with pytest.raises(ConfigError, match=message):
        StepGroups(steps_per_item).validation_interval_in_items(interval, steps_per_epoch, across_epochs)
