"""The train and dev inputs of a multi-worker job: each worker's share, chosen by `train.input_sharding`.

By file, each worker reads its own shards (no worker reads what another does: the way to scale reading),
which needs enough shards to balance; by data, each worker reads every shard and keeps its slice of every
global batch, so the global batches are exactly those of one worker (any shard count; each worker pays
for reading all). Dev is always split by data: it is small, and its loss must count every batch once.
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import tensorflow as tf

from captioner.errors import UsageError
from trainer.distributed import strategy as strategy_lib

log = logging.getLogger("trainer")

SHARDS_PER_WORKER = 4  # auto picks file sharding from this many train shards per worker


def sharding(kind: str, shards: int, workers: int) -> str:
    """file | data for `train.input_sharding` (auto | file | data) and the train split's shard count."""
    if kind == "file" and shards < workers:
        raise UsageError(f"train.input_sharding=file needs a train shard per worker at least, but the train split "
                         f"has {shards} shards for {workers} workers: use data (or auto), or extract with "
                         "more shards (extract.num_shards)")
    if kind == "auto":
        return "file" if shards >= SHARDS_PER_WORKER * workers else "data"
    return kind


def distributed(distribution: tf.distribute.Strategy, caption_data, counts, train_cfg,
                global_batch: int) -> Tuple[tf.distribute.DistributedDataset, Optional[object]]:
    """(train batches, repeating; dev batches, one pass, or None) for a CustomLoop under `distribution`."""
    workers, index = strategy_lib.workers(distribution), strategy_lib.worker_index(distribution)
    shards = len(caption_data.features.files("train"))
    kind = sharding(train_cfg.input_sharding, shards, workers)
    log.info("input sharding by %s: %d train shards over %d workers%s", kind, shards, workers,
             " (each reads its own shards; an epoch is steps x global batch, about one pass)" if kind == "file"
             else " (each reads every shard and keeps its slice of each global batch)")

    def inputs(split: str, split_counts, training: bool, by_file: bool):
        def per_worker(context: tf.distribute.InputContext):
            return caption_data.worker_examples(
                split, global_batch, split_counts, training, train_cfg.shuffle_buffer if training else 0,
                (index, workers), context.get_per_replica_batch_size(global_batch), by_file)
        return distribution.distribute_datasets_from_function(per_worker)

    train = inputs("train", counts["train"], True, kind == "file")
    dev = inputs("dev", counts["dev"], False, False) if counts["dev"] and counts["dev"].examples else None
    return train, dev
