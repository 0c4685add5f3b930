"""The tf.distribute strategy a job trains under, chosen by `train.strategy`.

MirroredStrategy keeps a copy of the model on every GPU of one machine and sums
the gradients across them after each step; on a CPU-only machine tests split the
CPU into logical devices to get two replicas.
"""
from __future__ import annotations

import logging
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
    if kind == "default":
        if devices:
            log.warning("--devices is ignored with train.strategy=default (one device)")
        return tf.distribute.get_strategy()
    raise ValueError(f"train.strategy={kind!r} is not one of mirrored, default")


def strategy_devices(strategy: tf.distribute.Strategy) -> List[str]:
    return list(getattr(strategy.extended, "worker_devices", None) or ["default device"])
