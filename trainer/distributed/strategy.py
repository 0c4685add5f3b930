"""The tf.distribute strategy a job trains under, chosen by `train.strategy`, and this process's role in it.

MirroredStrategy keeps a copy of the model on every GPU of one machine and sums
the gradients across them after each step; on a CPU-only machine tests split the
CPU into logical devices to get two replicas. MultiWorkerMirroredStrategy does
the same across machines (collective all-reduce), the cluster read from
TF_CONFIG; one worker, the chief, writes the job dir.
"""
from __future__ import annotations

import json
import logging
import os
from typing import List, Optional, Sequence

import tensorflow as tf

from captioner.errors import UsageError

log = logging.getLogger("trainer")


def ensure_logical_cpus(devices: Optional[Sequence[str]]) -> None:
    """Splits the CPU into as many logical devices as `devices` names (/cpu:1 needs two), for CPU tests.

    Only possible before TensorFlow runs its first op; a process that already
    has enough logical CPUs (e.g. tests/conftest.py made two) is left alone.
    """
    wanted = [int(d.rsplit(":", 1)[1]) for d in devices or () if "cpu:" in d.lower()]
    if not wanted:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    have = len(tf.config.get_logical_device_configuration(cpu) or [None])
    if max(wanted) < have:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(max(wanted) + 1)])
    except RuntimeError as error:
        raise UsageError(f"--devices {','.join(devices)} needs {max(wanted) + 1} logical CPUs, but TensorFlow "
                           "was already initialised with fewer; pass --devices at process start") from error


def make_strategy(kind: str, devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """`mirrored`: MirroredStrategy over `devices` or every visible GPU (the CPU when there is none);
    `default`: the no-op default strategy (one device)."""
    if kind == "mirrored":
        ensure_logical_cpus(devices)
        gpus = tf.config.list_physical_devices("GPU")
        wanted_gpus = [d for d in devices or () if "gpu:" in d.lower()]
        if wanted_gpus and len(gpus) <= max(int(d.rsplit(":", 1)[1]) for d in wanted_gpus):
            raise UsageError(f"--devices {','.join(devices)} names a GPU, but TensorFlow sees {len(gpus)}; "
                             "leave --devices out to use every visible GPU (or the CPU when there is none)")
        cpu_only = all("gpu" not in d.lower() for d in devices) if devices else not gpus
        # On CPUs, reduce through one device: the default collective all-reduce keys its ops per process,
        # so a second MirroredStrategy in the same process (tests, notebooks) collides with the first.
        cross_device_ops = tf.distribute.ReductionToOneDevice() if cpu_only else None
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None,
                                              cross_device_ops=cross_device_ops)
    if kind == "multi_worker":
        return _multi_worker(devices)
    if kind == "default":
        if devices:
            log.warning("--devices is ignored with train.strategy=default (one device)")
        return tf.distribute.get_strategy()
    raise ValueError(f"train.strategy={kind!r} is not one of mirrored, default, multi_worker")


def _multi_worker(devices: Optional[Sequence[str]]) -> tf.distribute.Strategy:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UsageError("train.strategy=multi_worker needs TF_CONFIG, the cluster's description (Vertex AI sets it "
                         "on every replica of a multi-replica job; python -m trainer.local_cluster sets it for "
                         "worker processes on this machine)")
    try:
        cluster = json.loads(raw)
        task = cluster["task"]
        addresses = cluster["cluster"][task["type"]][int(task["index"])]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise UsageError(f"TF_CONFIG is not a cluster description with this task in it ({error!r}): {raw[:200]}")
    if devices:
        log.warning("--devices is ignored with train.strategy=multi_worker (every GPU of each worker)")
    log.info("this process: %s %s (%s) of a cluster of %s", task["type"], task["index"], addresses, json.dumps(
        {kind: len(members) for kind, members in cluster["cluster"].items()}))
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the job dir: the chief of a multi-worker cluster (the "chief" task, else
    worker 0), and the one process of every other strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes training together (1 but for a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's place among `workers(strategy)`: the chief 0, then the workers in order."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    has_chief = "chief" in resolver.cluster_spec().jobs
    return 0 if resolver.task_type == "chief" else resolver.task_id + (1 if has_chief else 0)


def strategy_devices(strategy: tf.distribute.Strategy) -> List[str]:
    try:
        return list(strategy.extended.worker_devices)
    except (AttributeError, RuntimeError):  # the default strategy has none to list
        return ["default device"]
