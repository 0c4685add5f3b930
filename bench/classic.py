"""The classic Keras merge-model tutorial's method, as the baseline of bench/train.py and bench/caption.py.

What the tutorials (e.g. "How to Develop a Deep Learning Photo Caption Generator from Scratch") do, in Keras 3:
- all photo features in memory in a dict, captions as `startseq w1 .. wn endseq`;
- `create_sequences`: per image, every prefix -> next-word sample of every caption, each prefix padded
  with `pad_sequences` (left padding, to max_length) and each target one-hot with `to_categorical`;
- `data_generator`: yields one image's samples as one batch, forever; `model.fit(generator,
  steps_per_epoch=number of images)`, categorical cross-entropy, Adam;
- `generate_desc`: one `model.predict` call per word, batch 1, argmax, until `endseq` or max_length.

The project's own helpers read the data (trainer.data, captioner.schema) and its vocabulary replaces
Keras's removed Tokenizer: ids are the decoder's token table (PAD=0, OOV, START, END, then the words).
Nothing here is used by the project itself.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# --- cores, date, child processes ------------------------------------------------------------------
def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} cores{' (' + model + ')' if model else ''}"


def today() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")


def _tree_rss_kb(root: int) -> int:
    """Sum of VmRSS over `root` and all its descendants (reads /proc; 0 where it cannot)."""
    parents: Dict[int, int] = {}
    rss: Dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        parents[int(name)] = int(fields.get("PPid", "0").strip() or 0)
        rss[int(name)] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    total, todo = 0, [root]
    seen = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss.get(pid, 0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def run_child(command: Sequence[str], log_path: str, cwd: str = ROOT, sample_tree: bool = False,
              env: Optional[dict] = None) -> dict:
    """Runs one command in its own process; returns rc, wall seconds, peak RSS (os.wait4 ru_maxrss, MB).

    ru_maxrss of a waited child is the largest RSS of that process or of any descendant it reaped, not a
    sum; with `sample_tree` the summed RSS of the whole process tree is also sampled every 0.25 s.
    """
    import subprocess
    import threading

    started = time.time()
    with open(log_path, "w") as log:
        child = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        peak_tree = [0]
        done = threading.Event()

        def sample():
            while not done.wait(0.25):
                peak_tree[0] = max(peak_tree[0], _tree_rss_kb(child.pid))

        sampler = threading.Thread(target=sample, daemon=True) if sample_tree else None
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        if sampler:
            sampler.join()
    result = {"rc": child.returncode, "wall_s": time.time() - started, "peak_rss_mb": usage.ru_maxrss / 1024,
              "log": log_path}
    if sample_tree:
        result["peak_tree_rss_mb"] = peak_tree[0] / 1024
    return result


def marginal_rate(images: int, seconds: float, part_images: int, part_seconds: float) -> float:
    """Items/s of what a full run does beyond a partial one: fixed start-up costs cancel out."""
    return (images - part_images) / max(1e-9, seconds - part_seconds)


def log_tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return "(no log)"


# --- data: the project's features folder, read with the project's helpers ---------------------------
@dataclasses.dataclass
class Split:
    ids: List[str]
    stored: np.ndarray                 # features as stored (e.g. uint8), [N, ...]
    features: np.ndarray               # dequantized float32 (what the tutorials keep in memory)
    references: List[List[List[str]]]  # cleaned caption tokens per image


def open_folder(features: str, feature: str = "pooled"):
    """(trainer.data.FeaturesFolder, trainer.data.CaptionData) of a features folder, for `feature` features."""
    from trainer import data
    train_cfg = {"decoder": "merge", "features": feature}
    folder = data.open_features(features, train_cfg, tempfile.mkdtemp(prefix="bench-features-"))
    return folder, data.CaptionData(folder, max_length=32)


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
    from trainer.data import END_ID, OOV_ID, START_ID
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


# --- decoding: the tutorials' generate_desc loop on a project decoder ------------------------------
def classic_greedy(model, features: np.ndarray, max_words: int) -> Tuple[List[int], int]:
    """The tutorials' `generate_desc` on a project decoder: one `model.predict` per word, batch 1.

    The prefix is right-padded to a fixed max_words+1 tokens (the decoder has no mask; it is causal, so the
    logits at the prefix's last position ignore the padding) and that position's argmax is the next word.
    The generation rules are the project's (PAD/OOV/START never chosen, END forced after max_words words),
    so the captions can be compared with the batched greedy decoder's; the cost is the tutorials'.
    Returns the ids (START .. END) and the number of predict calls.
    """
    from trainer.data import END_ID, OOV_ID, PAD_ID, START_ID
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
    from trainer import decoding
    return " ".join(decoding.ids_to_words(sequence, tokens))


def timed(function: Callable, *args, **kwargs) -> Tuple[float, object]:
    started = time.time()
    value = function(*args, **kwargs)
    return time.time() - started, value
