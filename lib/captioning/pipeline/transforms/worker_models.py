"""Models built once per Python worker process, reused by every task and batch it runs.

Spark reuses Python workers across tasks (``spark.python.worker.reuse``, on by default),
so a per-process cache means one CNN build per worker instead of one per partition or
batch. Keys are the frozen configs, so two configs never share a model.
"""
from __future__ import annotations

import functools
import os


def assign_task_gpu() -> None:
    """Pin this worker to the GPU Spark's resource scheduler gave the current task.

    With ``spark.task.resource.gpu.amount=1`` each task is told its GPU address; making
    only that device visible keeps concurrent tasks of one executor off each other's GPU.
    Must run before TensorFlow initialises its devices; a no-op without GPU resources.
    """
    try:
        from pyspark import TaskContext
    except ImportError:  # outside Spark
        return
    context = TaskContext.get()
    if context is None:
        return
    gpu = context.resources().get("gpu")
    if gpu and gpu.addresses and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu.addresses)


@functools.lru_cache(maxsize=2)
def featurizer(encoder_config):
    """(compiled batch featurizer, backbone spec) for an EncoderConfig, built once per process."""
    from captioning.model.encoder_spec import backbone_spec
    from captioning.model.encoder import build_encoder, configure_tensorflow, make_batch_featurizer

    assign_task_gpu()
    configure_tensorflow(mixed_precision=encoder_config.mixed_precision)
    model = build_encoder(encoder_config)
    return make_batch_featurizer(model), backbone_spec(encoder_config.backbone)


@functools.lru_cache(maxsize=2)
def captioner(model_uri: str, search_config):
    """A Captioner for a model directory and search settings, built once per process."""
    from captioning.model.captioner import Captioner
    from captioning.model.model_dir import read_info

    assign_task_gpu()
    return Captioner(read_info(model_uri), search_config)
