"""The data-parallel launcher refuses settings a barrier stage cannot run under."""
import pytest

from captioning.cluster.barrier import WorkerRole, check_barrier_settings


@pytest.mark.parametrize("value", ["true", "TRUE", " true "])
def test_dynamic_allocation_is_refused_with_the_setting_to_change(value):
    with pytest.raises(ValueError) as error:
        check_barrier_settings(value)
    assert "spark.dynamicAllocation.enabled=false" in str(error.value)
    assert "--workers 1" in str(error.value)


@pytest.mark.parametrize("value", ["false", "False", ""])
def test_static_allocation_is_accepted(value):
    assert check_barrier_settings(value) is None


def test_worker_zero_is_the_chief_and_tf_config_lists_every_worker():
    role = WorkerRole(rank=1, addresses=("10.0.0.1:4000", "10.0.0.2:4001"))
    assert role.count == 2 and not role.is_chief
    assert role.tf_config() == {"cluster": {"worker": ["10.0.0.1:4000", "10.0.0.2:4001"]}, "task": {"type": "worker", "index": 1}}


def test_a_rank_outside_the_group_is_refused():
    with pytest.raises(ValueError, match="rank 2 outside a group of 2"):
        WorkerRole(rank=2, addresses=("a:1", "b:2"))
