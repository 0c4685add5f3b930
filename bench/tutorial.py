"""The classic Keras merge-model tutorial's method: the baseline of bench.train and bench.caption.

What the tutorials (e.g. "How to Develop a Deep Learning Photo Caption Generator from Scratch") do, in Keras 3:
- all photo features in memory in a dict, captions as `startseq w1 .. wn endseq`;
- `create_sequences`: per image, every prefix -> next-word sample of every caption, each prefix padded
  with `pad_sequences` (left padding, to max_length) and each target one-hot with `to_categorical`;
- `data_generator`: yields one image's samples as one batch, forever; `model.fit(generator,
  steps_per_epoch=number of images)`, categorical cross-entropy, Adam;
- `generate_desc`: one `model.predict` call per word, batch 1, argmax, until `endseq` or max_length.

The project's own helpers read the data (trainer.features_folder, trainer.data, captioner.schema) and its
vocabulary replaces Keras's removed Tokenizer: ids are the decoder's token table (captioner.text: PAD=0, OOV,
START, END, then the words).
Nothing here is used by the project itself.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np


# --- data: the project's features folder, read with the project's helpers ---------------------------
@dataclasses.dataclass
class Split:
    ids: List[str]
    stored: np.ndarray                 # features as stored (e.g. uint8), [N, ...]
    features: np.ndarray               # dequantized float32 (what the tutorials keep in memory)
    references: List[List[List[str]]]  # cleaned caption tokens per image


def open_folder(features: str, feature: str = "pooled"):
    """(trainer.features_folder.FeaturesFolder, trainer.data.CaptionData) of a features folder, for `feature`."""
    from captioner.config import TrainConfig
    from trainer.data import CaptionData
    from trainer.features_folder import open_features
    train_cfg = TrainConfig(decoder="merge", features=feature)
    folder = open_features(features, train_cfg, tempfile.mkdtemp(prefix="bench-features-"))
    return folder, CaptionData(folder, max_length=32)


def read_split(folder, caption_data, split: str, limit: Optional[int] = None, batch_size: int = 256) -> Split:
    """The first `limit` images of a split (every image when None), in the shards' order."""
    from captioner import schema
    ids, stored, references = [], [], []
    if not folder.files(split):
        return Split([], np.zeros([0] + folder.shape, np.float32), np.zeros([0] + folder.shape, np.float32), [])
    for batch_ids, arrays, refs in caption_data.images(split, batch_size):
        ids.extend(batch_ids)
        stored.append(arrays)
        references.extend(refs)
        if limit is not None and len(ids) >= limit:
            break
    stored_all = np.concatenate(stored)[:limit]
    return Split(ids[:limit], stored_all, schema.dequantize(stored_all, folder.info), references[:limit])


# --- training: the tutorials' model, samples and generator -----------------------------------------
def caption_sequence(words: Sequence[str], index: Dict[str, int], max_words: int) -> List[int]:
    """`startseq w1 .. wn endseq` as ids (the trainer's truncation to max_words words; unknown words -> OOV)."""
    from captioner.text import END_ID, OOV_ID, START_ID
    return [START_ID] + [index.get(w, OOV_ID) for w in list(words)[:max_words]] + [END_ID]


def max_sequence_length(references: Sequence[Sequence[Sequence[str]]], max_words: int) -> int:
    """The tutorials' max_length: the longest description in tokens, startseq and endseq included."""
    return max(min(len(c), max_words) + 2 for captions in references for c in captions)


def build_merge_model(feature_dim: int, vocab_size: int, max_length: int, units: int = 256):
    """The tutorials' merge model: photo Dropout+Dense, caption Embedding(mask_zero)+Dropout+LSTM, add, MLP."""
    import keras
    from keras import layers
    inputs1 = keras.Input(shape=(feature_dim,), name="photo")
    fe1 = layers.Dropout(0.5)(inputs1)
    fe2 = layers.Dense(units, activation="relu")(fe1)
    inputs2 = keras.Input(shape=(max_length,), name="sequence")
    se1 = layers.Embedding(vocab_size, units, mask_zero=True)(inputs2)
    se2 = layers.Dropout(0.5)(se1)
    se3 = layers.LSTM(units)(se2)
    decoder1 = layers.add([fe2, se3])
    decoder2 = layers.Dense(units, activation="relu")(decoder1)
    outputs = layers.Dense(vocab_size, activation="softmax")(decoder2)
    model = keras.Model(inputs=[inputs1, inputs2], outputs=outputs)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


def create_sequences(sequences: Sequence[Sequence[int]], photo: np.ndarray, max_length: int, vocab_size: int):
    """One image's (photos, padded prefixes, one-hot next words), sample by sample as the tutorials do."""
    import keras
    x1, x2, y = [], [], []
    for seq in sequences:
        for i in range(1, len(seq)):
            in_seq, out_seq = seq[:i], seq[i]
            in_seq = keras.utils.pad_sequences([in_seq], maxlen=max_length)[0]
            out_seq = keras.utils.to_categorical([out_seq], num_classes=vocab_size)[0]
            x1.append(photo)
            x2.append(in_seq)
            y.append(out_seq)
    return np.array(x1), np.array(x2), np.array(y)


def data_generator(descriptions: Dict[str, List[List[int]]], photos: Dict[str, np.ndarray], max_length: int,
                   vocab_size: int) -> Iterator:
    """Forever: one batch per image, every prefix of every one of its captions."""
    while True:
        for key, desc_list in descriptions.items():
            in_img, in_seq, out_word = create_sequences(desc_list, photos[key], max_length, vocab_size)
            yield (in_img, in_seq), out_word


def prefix_samples(descriptions: Dict[str, List[List[int]]]) -> int:
    return sum(len(seq) - 1 for captions in descriptions.values() for seq in captions)


def fit_classic(features: str, epochs: int, units: int = 256, max_words: int = 32) -> dict:
    """Trains the merge model the tutorials' way on a features folder's pooled train split (dev loss likewise).

    Returns per-epoch seconds and Keras logs, the split sizes, the prefix samples and the parameter count.
    """
    import keras
    folder, caption_data = open_folder(features, "pooled")
    tokens = folder.tokens
    index = {t: i for i, t in enumerate(tokens)}
    train = read_split(folder, caption_data, "train")
    dev = read_split(folder, caption_data, "dev")
    # the tutorials keep every photo's features in a dict in memory, and every description as text
    photos = {i: f for i, f in zip(train.ids + dev.ids, list(train.features) + list(dev.features))}
    train_desc = {i: [caption_sequence(c, index, max_words) for c in refs]
                  for i, refs in zip(train.ids, train.references) if refs}
    dev_desc = {i: [caption_sequence(c, index, max_words) for c in refs]
                for i, refs in zip(dev.ids, dev.references) if refs}
    max_length = max_sequence_length(train.references, max_words)
    keras.utils.set_random_seed(42)
    model = build_merge_model(train.features.shape[1], len(tokens), max_length, units)

    class EpochTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):  # after the dev pass, as trainer.training.HistoryFile times it
            self.epochs.append({"epoch": epoch + 1, "seconds": time.time() - self.started,
                                **{k: float(v) for k, v in (logs or {}).items()}})

    timer = EpochTimes()
    validation = {}
    if dev_desc:
        validation = {"validation_data": data_generator(dev_desc, photos, max_length, len(tokens)),
                      "validation_steps": len(dev_desc)}
    model.fit(data_generator(train_desc, photos, max_length, len(tokens)), epochs=epochs,
              steps_per_epoch=len(train_desc), callbacks=[timer], verbose=2, **validation)
    return {"epochs": timer.epochs, "train_images": len(train_desc), "dev_images": len(dev_desc),
            "train_samples": prefix_samples(train_desc), "dev_samples": prefix_samples(dev_desc),
            "dev_captions": sum(len(v) for v in dev_desc.values()),
            "max_length": max_length, "parameters": int(model.count_params())}


# --- decoding: the tutorials' generate_desc loop on a project decoder ------------------------------
def classic_greedy(model, features: np.ndarray, max_words: int) -> Tuple[List[int], int]:
    """The tutorials' `generate_desc` on a project decoder: one `model.predict` per word, batch 1.

    The prefix is right-padded to a fixed max_words+1 tokens (the decoder has no mask; it is causal, so the
    logits at the prefix's last position ignore the padding) and that position's argmax is the next word.
    The generation rules are the project's (PAD/OOV/START never chosen, END forced after max_words words),
    so the captions can be compared with the batched greedy decoder's; the cost is the tutorials'.
    Returns the ids (START .. END) and the number of predict calls.
    """
    from captioner.text import END_ID, OOV_ID, PAD_ID, START_ID
    width = max_words + 1
    sequence = [START_ID]
    photo = np.asarray(features, np.float32)[None]
    calls = 0
    for _ in range(max_words):
        calls += 1
        tokens = np.full([1, width], PAD_ID, np.int32)
        tokens[0, :len(sequence)] = sequence
        logits = model.predict({"features": photo, "tokens": tokens}, verbose=0)[0, len(sequence) - 1]
        logits[[PAD_ID, OOV_ID, START_ID]] = -np.inf
        word = int(np.argmax(logits))
        sequence.append(word)
        if word == END_ID:
            break
    else:
        sequence.append(END_ID)
    return sequence, calls


def words_of(sequence: Sequence[int], tokens: Sequence[str]) -> str:
    from captioner.decoder.search import ids_to_words
    return " ".join(ids_to_words(sequence, tokens))


def caption_all(model, tokens: Sequence[str], ids: Sequence[str], features_of: Callable[[str], np.ndarray],
                max_words: int, since: Optional[float] = None) -> dict:
    """`classic_greedy` over `ids`, one image after the other (features_of(id): its dequantized features).

    The first image is captioned once first, untimed (the first predict traces). With `since` (a time.time()),
    `startup_s` is the time from `since` to the start of the timed loop.
    """
    def caption(image_id: str) -> Tuple[str, int]:
        sequence, used = classic_greedy(model, features_of(image_id), max_words)
        return words_of(sequence, tokens), used

    caption(ids[0])
    captions, calls, started = {}, 0, time.time()
    for image_id in ids:
        captions[image_id], used = caption(image_id)
        calls += used
    seconds = time.time() - started
    result = {"images": len(ids), "seconds": seconds, "captions_per_s": len(ids) / seconds, "predict_calls": calls,
              "captions": captions}
    if since is not None:
        result["startup_s"] = started - since
    return result
