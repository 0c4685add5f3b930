"""The trainer's input pipelines: tf.data over the TFRecord shards of a checked features folder.

Why it looks like this:
- One record per image holds all of its captions; training rows are made here
  inside tf.data: an image with `captions_per_row` (C) of its captions, each the
  whole caption `<start> w1..wn <end>` padded to max_length+2 (teacher forcing,
  the loss masks the padding). An image with more captions makes several rows,
  one with fewer gets all-PAD captions. The model computes the image side once
  per row (trainer/grouped.py). Nothing is expanded in memory, so memory stays
  flat however large the split grows.
- Features stay as the stored bytes (e.g. uint8) through the shuffle buffers
  and are decoded and dequantized (`schema.decode_tensor`) one batch at a time,
  so a buffer costs what the shards cost on disk. `train.shuffle_buffer`
  counts examples (captions); it is spent on whole records.
- Each batch is cut to its longest caption, and training batches are made
  from windows of `train.sort_window_batches` batches sorted by their rows'
  longest caption (the batches are then shuffled), so little compute goes to
  padding: Flickr8k captions average ~12 tokens against max_length+2 = 34. Sorted
  batches are less varied; where caption length follows the image content (the
  demo's shapes), 0 or 1 turns sorting off.
- The order depends on the seed only (seeded shuffles, deterministic
  interleave), so runs with different replica counts see the same global
  batches; a multi-worker job's workers take their slice of each
  (`worker_examples`), or read their own shards.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from captioner import schema
from captioner.errors import UsageError
from captioner.manifest import ManifestError
from captioner.text import END_ID, OOV_ID, PAD_ID, START_ID
from trainer import image_inputs
from trainer.features_folder import FEATURE_KEYS, MAX_CAPTIONS_PER_ROW, Counts, FeaturesFolder


FEATURES, IMAGES = "features", "images"  # what a CaptionData feeds the model: stored features or kept images


class CaptionData:
    """Builds the datasets of one features folder for one config (the token table lives here).

    `source` FEATURES feeds the stored features ({"features": ...}); IMAGES the kept images ({"images": uint8
    [B, h, w, 3]}, trainer/image_inputs.py; randomly cropped and flipped in training when `augment`), for
    fine-tuning the encoder. `for_images` makes the second from the first.
    """

    def __init__(self, features: FeaturesFolder, max_length: int, seed: int = 0, sort_window_batches: int = 0,
                 captions_per_row: int = 1, source: str = FEATURES, augment: bool = False):
        self.features = features
        self.captions_per_row = int(captions_per_row)  # C: the train split's captions per image (Counts)
        self.max_length = int(max_length)
        self.seed = int(seed)
        self.sort_window_batches = int(sort_window_batches)
        self.source, self.augment = source, bool(augment)
        tokens = features.tokens
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(tokens), tf.range(len(tokens), dtype=tf.int64)),
            default_value=OOV_ID)
        self._spec = schema.feature_spec(with_spatial=features.feature == "spatial", with_image=source == IMAGES)
        self._key = schema.IMAGE if source == IMAGES else FEATURE_KEYS[features.feature]

    def for_images(self, augment: bool) -> "CaptionData":
        """The same data feeding the kept images instead of the stored features (the records must keep them)."""
        return CaptionData(self.features, self.max_length, self.seed, self.sort_window_batches,
                           self.captions_per_row, IMAGES, augment)

    # --- pieces ---------------------------------------------------------------------------------
    def caption_ids(self, captions: tf.Tensor) -> tf.Tensor:
        """Cleaned captions [C] -> int32 [C', max_length+2] `<start> w.. <end> PAD..` (empty captions dropped)."""
        words = tf.strings.split(captions)
        words = tf.ragged.boolean_mask(words, words.row_lengths() > 0)[:, :self.max_length]
        ids = tf.ragged.map_flat_values(self.table.lookup, words)
        n = ids.nrows()
        start = tf.RaggedTensor.from_tensor(tf.fill([n, 1], tf.constant(START_ID, tf.int64)))
        end = tf.RaggedTensor.from_tensor(tf.fill([n, 1], tf.constant(END_ID, tf.int64)))
        full = tf.concat([start, ids, end], axis=1)
        return tf.cast(full.to_tensor(default_value=PAD_ID, shape=[None, self.max_length + 2]), tf.int32)

    def caption_rows(self, captions: tf.Tensor) -> tf.Tensor:
        """Cleaned captions [n] -> int32 [ceil(n / C), C, max_length+2]: the image's rows, the last one PAD-filled."""
        ids, per_row = self.caption_ids(captions), self.captions_per_row
        rows = (tf.shape(ids)[0] + per_row - 1) // per_row
        ids = tf.pad(ids, [[0, rows * per_row - tf.shape(ids)[0]], [0, 0]], constant_values=PAD_ID)
        return tf.reshape(ids, [rows, per_row, self.max_length + 2])

    def _records(self, split: str, shuffle: bool, record_buffer: int = 1,
                 files: Optional[Sequence[str]] = None) -> tf.data.Dataset:
        files = self.features.files(split) if files is None else list(files)
        if not files:
            raise ManifestError(f"{self.features.source} has no {split} shards "
                                f"({self.features.manifest['shards'][split]})")
        ds = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            ds = ds.shuffle(len(files), seed=self.seed, reshuffle_each_iteration=True)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle and record_buffer > 1:
            ds = ds.shuffle(record_buffer, seed=self.seed + 1, reshuffle_each_iteration=True)
        return ds

    def _parse_for_training(self, serialized):
        parsed = tf.io.parse_single_example(serialized, self._spec)
        ids = self.caption_rows(tf.sparse.to_dense(parsed[schema.CAPTIONS]))
        raw = tf.repeat(parsed[self._key][None], tf.shape(ids)[0])
        return raw, ids

    def _to_model_inputs(self, raw, ids):
        """(stored bytes or decoded images [B, ...], caption rows [B, C, L]) -> (model inputs, targets)."""
        ids = ids[..., :tf.reduce_max(_caption_lengths(ids))]  # the batch's longest caption, END included
        if self.source == IMAGES:
            return {"images": raw, "tokens": ids[..., :-1]}, ids[..., 1:]
        info = self.features.info
        features = schema.decode_tensor(raw, info["dtype"], [-1] + self.features.shape,
                                        info.get("scale"), info.get("zero_point") or 0)
        return {"features": features, "tokens": ids[..., :-1]}, ids[..., 1:]

    def _similar_lengths_together(self, ds: tf.data.Dataset, global_batch: int) -> tf.data.Dataset:
        """Sorts windows of rows by their longest caption, batches them, and shuffles the batches."""
        def sort(raw, ids):
            order = tf.argsort(tf.reduce_max(_caption_lengths(ids), axis=1), stable=True)
            return tf.gather(raw, order), tf.gather(ids, order)

        ds = ds.batch(global_batch * self.sort_window_batches).map(sort, num_parallel_calls=tf.data.AUTOTUNE,
                                                               deterministic=True)
        ds = ds.unbatch().batch(global_batch, drop_remainder=True)
        return ds.shuffle(self.sort_window_batches, seed=self.seed + 3, reshuffle_each_iteration=True)

    # --- datasets -------------------------------------------------------------------------------
    def count(self, split: str) -> Counts:
        """One pass over a split's captions (features are not decoded): steps per epoch and loss scale.

        The rows are counted for every C up to MAX_CAPTIONS_PER_ROW, so the train split's counts can choose C.
        """
        spec = {schema.CAPTIONS: self._spec[schema.CAPTIONS]}
        widths = tf.range(1, MAX_CAPTIONS_PER_ROW + 1, dtype=tf.int64)

        def stats(serialized):
            ids = self.caption_ids(tf.sparse.to_dense(tf.io.parse_single_example(serialized, spec)[schema.CAPTIONS]))
            captions = tf.cast(tf.shape(ids)[0], tf.int64)
            return tf.concat([[1, captions, tf.reduce_sum(tf.cast(ids[:, 1:] != PAD_ID, tf.int64))],
                              (captions + widths - 1) // widths], axis=0)

        ds = self._records(split, shuffle=False).map(stats, num_parallel_calls=tf.data.AUTOTUNE)
        try:  # every record of the split is read here, before any training: its CRCs catch damaged shards
            total = [int(n) for n in ds.reduce(tf.zeros([3 + MAX_CAPTIONS_PER_ROW], tf.int64),
                                               lambda acc, x: acc + x).numpy()]
        except tf.errors.DataLossError:
            raise ManifestError(damaged_shards_message(self.features.source, self.features.files(split))) from None
        return Counts(total[0], total[1], total[2], tuple(total[3:]))

    def examples(self, split: str, global_batch: int, counts: Counts, training: bool,
                 shuffle_buffer: int = 0) -> tf.data.Dataset:
        """Batches of ({"features" [B, ...], "tokens" [B, C, T]}, targets [B, C, T]) for `fit`, all of exactly
        `global_batch` rows (images)."""
        ds, steps = self._batches(split, global_batch, counts, training, shuffle_buffer)
        return _one_pipeline(ds.apply(tf.data.experimental.assert_cardinality(steps)))

    def worker_examples(self, split: str, global_batch: int, counts: Counts, training: bool, shuffle_buffer: int,
                        worker: Tuple[int, int], replica_batch: int, by_file: bool) -> tf.data.Dataset:
        """One worker's share of `examples` in batches of `replica_batch`, for distribute_datasets_from_function.

        by_file: the worker reads every `workers`-th shard (its share of each epoch differs a little in size,
        so training repeats); else it reads all and keeps its slice of every global batch: the same global
        batches as one worker would train on. `worker` is (index, workers).
        """
        index, workers = worker
        if by_file:
            files = self.features.files(split)[index::workers]
            ds, _ = self._batches(split, replica_batch, counts, training, shuffle_buffer, files)
        else:
            ds, steps = self._batches(split, global_batch, counts, training, shuffle_buffer)
            share = global_batch // workers
            ds = ds.apply(tf.data.experimental.assert_cardinality(steps)).map(
                lambda inputs, targets: tf.nest.map_structure(
                    lambda t: t[index * share:(index + 1) * share], (inputs, targets)))
            ds = ds.unbatch().batch(replica_batch, drop_remainder=True)
        return _one_pipeline(ds.repeat() if training else ds)

    def _batches(self, split: str, global_batch: int, counts: Counts, training: bool, shuffle_buffer: int,
                 files: Optional[Sequence[str]] = None) -> Tuple[tf.data.Dataset, int]:
        """(batches of `global_batch` rows, how many a pass over the whole split makes)."""
        per_image = max(1.0, counts.examples / max(1, counts.images))
        record_buffer = max(1, int(shuffle_buffer / per_image)) if training else 1
        ds = self._records(split, shuffle=training, record_buffer=record_buffer, files=files)
        ds = ds.map(self._parse_for_training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.unbatch()
        if self.source == IMAGES:
            ds = image_inputs.decode_rows(ds, self.features.image_size, training and self.augment, self.seed)
        rows = counts.rows(self.captions_per_row)
        # Every batch is a full global batch, which the strategy splits evenly across replicas. Evaluation
        # drops its last partial batch too (unbiased, < 1 batch of rows unused), unless it has no full
        # batch at all: then it is padded with all-PAD rows, which Keras still counts in the mean (tiny sets only).
        pad_evaluation = not training and rows < global_batch
        if training and self.sort_window_batches > 1:
            ds = self._similar_lengths_together(ds, global_batch)
        else:
            ds = ds.batch(global_batch, drop_remainder=not pad_evaluation)
        ds = ds.map(self._to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if pad_evaluation:
            ds = ds.map(lambda inputs, targets: _pad_batch((inputs, targets), global_batch))
        return ds, 1 if pad_evaluation else rows // global_batch

    def images(self, split: str, batch_size: int,
               shuffle_buffer: int = 0) -> Iterator[Tuple[List[str], np.ndarray, List[List[List[str]]]]]:
        """(image ids, stored features [B, ...] in the stored dtype or, from IMAGES, the kept images uint8
        [B, h, w, 3], cleaned reference token lists) per batch.

        In file order, or shuffled (files, then a buffer of `shuffle_buffer` images) when that is > 1.
        """
        def pick(serialized):
            parsed = tf.io.parse_single_example(serialized, self._spec)
            joined = tf.strings.reduce_join(tf.sparse.to_dense(parsed[schema.CAPTIONS]), separator="\n")
            raw = parsed[self._key]
            if self.source == IMAGES:
                raw = image_inputs.decode(raw, self.features.image_size)
            return parsed[schema.IMAGE_ID], raw, joined

        ds = self._records(split, shuffle=shuffle_buffer > 1, record_buffer=shuffle_buffer)
        ds = ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE)
        for ids, raws, joined in ds.batch(batch_size).prefetch(2).as_numpy_iterator():
            arrays = raws if self.source == IMAGES else np.stack(
                [schema.array_from_bytes(r, self.features.info) for r in raws])
            references = [[c.split() for c in j.decode("utf-8").split("\n") if c.strip()] for j in joined]
            yield [i.decode("utf-8") for i in ids], arrays, references


def damaged_shards_message(source: str, files: Sequence[str]) -> str:
    """Which of `files` fail their TFRecord CRC checks (read one by one), as a message saying what to do."""
    damaged = []
    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.DataLossError:
            damaged.append(path)
    return (f"{source}: {len(damaged)} shard(s) fail their TFRecord checksums (truncated or changed after they were "
            f"written), e.g. {damaged[0] if damaged else files[0]}; re-run the extraction into a new --output")


def _one_pipeline(ds: tf.data.Dataset) -> tf.data.Dataset:
    """No auto-sharding: a worker's share is chosen here (worker_examples), and one worker feeds all its replicas."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _caption_lengths(ids: tf.Tensor) -> tf.Tensor:
    """Tokens per caption of right-padded caption ids [..., L], START and END included."""
    return tf.reduce_sum(tf.cast(ids != PAD_ID, tf.int32), axis=-1)


def steps_for(counts: Counts, global_batch: int, captions_per_row: int) -> int:
    steps = counts.rows(captions_per_row) // global_batch
    if steps < 1:
        raise UsageError(f"the train split has {counts.rows(captions_per_row)} rows of {captions_per_row} captions, "
                         f"fewer than one global batch of {global_batch} rows: lower train.batch_size")
    return steps


def _pad_batch(batch, global_batch: int):
    """Pads an evaluation batch smaller than the global batch with all-PAD rows.

    MirroredStrategy splits a batch evenly across replicas and fails on a 45-example
    batch over 2 replicas; PAD targets are masked, so the rows add no loss (but count in Keras' mean).
    """
    def pad(tensor):
        missing = global_batch - tf.shape(tensor)[0]
        paddings = tf.concat([[[0, missing]], tf.zeros([tf.rank(tensor) - 1, 2], tf.int32)], axis=0)
        return tf.pad(tensor, paddings)

    return tf.nest.map_structure(pad, batch)
