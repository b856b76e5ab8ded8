"""The pieces of data-parallel training that need no cluster: roles, the worker process, a
local barrier stage, and the epoch callback of a worker that is not the chief."""
import json
import os

import pytest

from captioning.cluster.barrier import WorkerRole, run_barrier, run_worker_process


def report_role(payload: dict, role: WorkerRole) -> dict:
    """An entry function: what a worker process was told."""
    return {"payload": payload, "addresses": list(role.addresses), "tf_config": json.loads(os.environ["TF_CONFIG"]), "chief": role.is_chief}


def fail(payload: dict, role: WorkerRole) -> dict:
    raise ValueError(f"worker {role.rank} gives up")


def test_roles_make_one_cluster_with_worker_zero_as_chief():
    addresses = ("127.0.0.1:1111", "127.0.0.1:2222")
    roles = [WorkerRole(rank, addresses) for rank in range(2)]
    assert [r.is_chief for r in roles] == [True, False] and roles[1].count == 2
    assert roles[1].tf_config() == {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError):
        WorkerRole(2, addresses)


def test_a_worker_runs_in_its_own_process_with_its_tf_config():
    role = WorkerRole(1, ("127.0.0.1:1111", "127.0.0.1:2222"))
    message = json.dumps({"entry": f"{__name__}:report_role", "payload": {"x": 1}})
    result = run_worker_process(message, role)
    assert result["rank"] == 1 and result["payload"] == {"x": 1} and result["chief"] is False
    assert result["tf_config"] == role.tf_config()


def test_a_failing_worker_fails_its_task_with_its_output():
    message = json.dumps({"entry": f"{__name__}:fail", "payload": {}})
    with pytest.raises(RuntimeError, match="worker 0 gives up"):
        run_worker_process(message, WorkerRole(0, ("127.0.0.1:1111",)))


def test_a_local_barrier_stage_gives_every_task_the_same_cluster(spark):
    results = run_barrier(spark, 2, f"{__name__}:report_role", {"x": 2})
    assert [r["rank"] for r in results] == [0, 1] and [r["chief"] for r in results] == [True, False]
    assert results[0]["addresses"] == results[1]["addresses"] and len(set(results[0]["addresses"])) == 2
    assert [r["tf_config"]["task"]["index"] for r in results] == [0, 1]


def test_only_the_chief_callback_writes(tmp_path):
    import keras

    from captioning.model.training.checkpoints import make_epoch_callback, new_state

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="adam", loss="mse")
    for chief in (False, True):
        out = tmp_path / ("chief" if chief else "other")
        callback = make_epoch_callback(str(out), new_state("f"), epochs=2, patience=3, is_chief=chief)
        callback.set_model(model)
        for epoch in range(2):
            callback.on_epoch_begin(epoch)
            callback.on_epoch_end(epoch, {"loss": 1.0 - epoch / 10, "val_loss": 1.0 - epoch / 10})
        written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        if chief:
            assert written == ["checkpoints/best.weights.h5", "checkpoints/epoch-0002.keras", "checkpoints/state.json", "history.json", "loss.png"]
            assert {os.path.relpath(uri, out) for uri in callback.written} == {*written, "checkpoints/epoch-0001.keras"}  # replaced by epoch 2
        else:
            assert written == [] and callback.written == []
