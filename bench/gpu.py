"""Benchmark: what a GPU does for this project, every stage measured in one process on the visible device.

    .venv/bin/python -m bench.gpu [--smoke] [--encoder PATH.keras] [--tflite PATH.tflite] [--out FILE]

A GPU is lent to the project only now and then: this script, run once on it (under 8 minutes on one H100),
prints one Markdown table for bench/RESULTS.md, its heading naming the GPU (or saying none was visible):
  extraction  images/s of the float Keras encoder (the TFLite MobileNet rebuilt, which a GPU can run and
              the trainer can fine-tune) on the default device, against the TFLite encoder on every CPU core
  training    s per step and captions/s on stored 7x7xC features, rows of 5 captions of 16 tokens: the
              transformer in float32 and mixed_float16, the attention LSTM, the transformer with the
              encoder's top blocks fine-tuned on images, the transformer under MirroredStrategy on every GPU
  captioning  captions/s of greedy and beam-3 search on stored features (END suppressed: every caption runs
              20 words), and from JPEG bytes end to end (Pillow on the CPU, float encoder, greedy search)
Every value is steady state, timed after a warm-up (one call, or a first `fit` epoch) that leaves tracing
out. Inputs are random and seeded; decoders untrained. Without a GPU it all runs on the CPU (the heading says
so); --smoke makes every size tiny (about a minute on 2 cores) to test the script.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

_STARTED = time.time()  # before TensorFlow loads, which takes seconds of the run too
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: its C++ notices off

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import harness  # noqa: E402
from captioner import encoders, images, text  # noqa: E402
from captioner.config import TrainConfig  # noqa: E402
from captioner.decoder import architectures, decoding, search  # noqa: E402
from captioner.encoders import from_tflite  # noqa: E402
from trainer import finetune, training  # noqa: E402
from trainer.grouped import GroupedDecoder  # noqa: E402

DEFAULT_TFLITE = "../shared/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"  # from the project root
SEED = 42
CAPTIONS, TOKENS, MAX_WORDS = 5, 16, 20  # captions per row, tokens per caption, words per decoded caption
SIZES = {"batch_images": (128, 4), "batch_rows": (64, 2), "steps": (20, 2), "vocabulary": (3000, 50)}  # (normal, smoke)
EXTRACT_FLOAT, EXTRACT_TFLITE = "extraction, float Keras encoder", "extraction, TFLite encoder on the CPU"
STEP_FLOAT32, STEP_MIXED = "training step, transformer, float32", "training step, transformer, mixed_float16"
STEP_LSTM, STEP_FINETUNE = "training step, attention LSTM, float32", "training step, transformer + encoder fine-tuning"
STEP_MIRRORED = "training step, transformer, MirroredStrategy"
GREEDY, BEAM = "captioning, greedy, stored features", "captioning, beam 3, stored features"
JPEG = "captioning, JPEG bytes end to end"
Row = Tuple[str, str, str, str]  # measurement, setting, value, unit


@dataclasses.dataclass(frozen=True)
class Run:
    """What every measurement needs: the sizes, the decoder's config, where it runs, the seeded generator."""
    batch_images: int
    batch_rows: int
    steps: int
    vocabulary: int
    train: TrainConfig  # the transformer the shipped config trains (a tiny one with --smoke)
    place: str          # "GPU" or "CPU", for the setting cells
    rng: np.random.Generator


def say(what: str) -> None:
    """Progress on stderr (stdout holds only the table), with the seconds since the script started."""
    print(f"[bench.gpu {time.time() - _STARTED:4.0f} s] {what}", file=sys.stderr, flush=True)


def number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def time_calls(call: Callable[[], object], calls: int) -> Tuple[float, object]:
    """(seconds per call after one warm-up call, the last value); `call` returns numpy, so its device work is done."""
    value = call()
    started = time.perf_counter()
    for _ in range(calls):
        value = call()
    return (time.perf_counter() - started) / calls, value


def random_pixels(run: Run, size: Sequence[int], count: Optional[int] = None) -> np.ndarray:
    return run.rng.integers(0, 256, [count or run.batch_images, *size, 3], dtype=np.uint8)


def float_encoder(args, work: str) -> Tuple[encoders.Encoder, str]:
    """(the float Keras encoder, what it is): --encoder, else --tflite rebuilt as Keras, else MobileNetV2."""
    if args.encoder:
        try:
            return encoders.load_encoder(args.encoder, spatial=True), os.path.basename(args.encoder)
        except encoders.EncoderError as error:
            raise SystemExit(f"error: --encoder: {error}") from None
    if os.path.exists(args.tflite):
        model, family = from_tflite.convert(args.tflite)
        path = os.path.join(work, "encoder.keras")
        from_tflite.save(model, path)
        return encoders.load_encoder(path, spatial=True), f"{family} rebuilt from its TFLite file"
    return (encoders.load_encoder("mobilenet_v2", weights="none", spatial=True),
            f"keras MobileNetV2, random weights (no TFLite file at {args.tflite})")


def extraction_rows(encoder: encoders.Encoder, described: str, tflite: str, run: Run) -> List[Row]:
    """Images/s of the float encoder on the default device and of the TFLite one on every CPU core."""
    threads, batch = os.cpu_count(), run.batch_images
    measured = [(EXTRACT_FLOAT, encoder, f"{described}, batch {batch}, on {run.place}")]
    if os.path.exists(tflite):
        measured.append((EXTRACT_TFLITE, encoders.load_encoder(tflite, spatial=True, num_threads=threads),
                         f"{os.path.basename(tflite)}, batch {batch}, {threads} threads"))
    rows = []
    for name, model, setting in measured:
        seconds, _ = time_calls(functools.partial(model.encode, random_pixels(run, model.input_size)), run.steps)
        rows.append((name, setting, number(batch / seconds), "images/s"))
    if not os.path.exists(tflite):
        rows.append((EXTRACT_TFLITE, "skipped", f"n/a: no TFLite file at {tflite}", "images/s"))
    return rows


class _EpochTimer(keras.callbacks.Callback):
    """The last epoch's seconds, its clock stopped once its loss is read (which waits for the device to finish)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        float(logs["loss"])
        self.seconds = time.perf_counter() - self.started


def step_data(image_side: dict, run: Run) -> tf.data.Dataset:
    """One batch of `image_side` rows, each with 5 full-length captions (<start> w1..w15 -> w1..w16), repeated."""
    rows = len(next(iter(image_side.values())))
    words = run.rng.integers(len(text.SPECIAL_TOKENS), run.vocabulary, [rows, CAPTIONS, TOKENS], dtype=np.int32)
    tokens = np.concatenate([np.full([rows, CAPTIONS, 1], text.START_ID, np.int32), words[..., :-1]], axis=-1)
    return tf.data.Dataset.from_tensor_slices(({**image_side, "tokens": tokens}, words)).batch(rows).cache().repeat()


def step_seconds(model: keras.Model, data: tf.data.Dataset, steps: int) -> float:
    """Steady-state seconds per step: `fit` for two epochs of `steps` steps, the second timed (the first traces)."""
    timer = _EpochTimer()
    model.fit(data, epochs=2, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
    return timer.seconds / steps


def step_rows(name: str, setting: str, seconds: float, rows: int) -> List[Row]:
    """A training measurement's two rows: seconds per step, and captions per second."""
    return [(name, setting, number(seconds), "s per step"),
            (name, setting, number(rows * CAPTIONS / seconds), "captions/s")]


def decoder_rows(feature_shape, run: Run) -> List[Row]:
    """The decoder's step on stored features, its model built and compiled as trainer/job.py does: the transformer
    in float32 and mixed_float16, the attention LSTM, the transformer under MirroredStrategy over every visible
    GPU (the CPU when there is none)."""
    variants = [(STEP_FLOAT32, run.train, None),
                (STEP_MIXED, dataclasses.replace(run.train, mixed_precision="mixed_float16"), None),
                (STEP_LSTM, dataclasses.replace(run.train, decoder="attention"), None),
                (STEP_MIRRORED, run.train, tf.distribute.MirroredStrategy())]
    rows = []
    for name, cfg, strategy in variants:
        say(name)
        strategy = strategy or tf.distribute.get_strategy()
        replicas = strategy.num_replicas_in_sync
        batch = run.batch_rows * replicas
        setting = (f"{cfg.decoder}, {cfg.units} units, {replicas} replica(s), global batch {batch} rows x {CAPTIONS} "
                   f"captions x {TOKENS} tokens, vocabulary {run.vocabulary}, on {run.place}")
        data = step_data({"features": run.rng.standard_normal([batch, *feature_shape], np.float32)}, run)
        try:
            with strategy.scope(), training.precision(cfg):
                model = GroupedDecoder(architectures.build_from_config(cfg, feature_shape, run.vocabulary))
                training.compile_model(model, cfg, run.steps, TOKENS, CAPTIONS)
            seconds = step_seconds(model, data, run.steps)
        except (tf.errors.OpError, TypeError, ValueError) as error:
            if run.place == "GPU" or cfg.mixed_precision == "none":
                raise
            reason = f"{type(error).__name__}: {str(error).strip()[:160]}".splitlines()[0].replace("|", "/")
            rows += [(name, setting, f"n/a on CPU: {reason}", unit) for unit in ("s per step", "captions/s")]
            continue
        rows += step_rows(name, setting, seconds, batch)
    return rows


def finetune_rows(encoder: encoders.Encoder, feature_shape, run: Run) -> List[Row]:
    """The step of encoder fine-tuning (trainer/job.py's): uint8 images through the top blocks, then the decoder."""
    say(STEP_FINETUNE)
    cfg = dataclasses.replace(run.train, finetune_encoder_epochs=1)
    cnn = finetune.train_top_blocks(encoder.trainable_model(), cfg.finetune_encoder_blocks)
    model = GroupedDecoder(architectures.build_from_config(cfg, feature_shape, run.vocabulary), cnn)
    finetune.compile_model(model, cfg, run.steps, training.CaptionLoss(TOKENS, cfg.label_smoothing, CAPTIONS))
    data = step_data({"images": random_pixels(run, encoder.input_size, run.batch_rows)}, run)
    setting = (f"{cfg.decoder} + top {cfg.finetune_encoder_blocks} blocks of the float encoder, {run.batch_rows} "
               f"images x {CAPTIONS} captions x {TOKENS} tokens, on {run.place}")
    return step_rows(STEP_FINETUNE, setting, step_seconds(model, data, run.steps), run.batch_rows)


def suppress_end(decoder: keras.Model) -> None:
    """An untrained decoder may end every caption at once; a large negative END bias on its logits makes every
    caption run to max_length words (decoding still forces END there), so short captions cannot flatter a rate."""
    bias = decoder.get_layer("logits").bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[text.END_ID]], [-1e4]))


def mean_words(tokens: np.ndarray, vocabulary: int) -> float:
    names = [str(i) for i in range(vocabulary)]
    return float(np.mean([len(search.ids_to_words(row, names)) for row in tokens]))


def captioning_rows(encoder: encoders.Encoder, feature_shape, run: Run) -> List[Row]:
    """Captions/s of greedy and beam-3 search on stored features, and of greedy search from JPEG bytes."""
    decoder = architectures.build_from_config(run.train, feature_shape, run.vocabulary)
    suppress_end(decoder)
    searcher = search.SequenceDecoder(decoder, run.vocabulary)
    features = run.rng.standard_normal([run.batch_images, *feature_shape], np.float32)
    rows = []
    for name, how in ((GREEDY, decoding.Decoding(1, 0.0, MAX_WORDS)), (BEAM, decoding.Decoding(3, 0.7, MAX_WORDS))):
        say(name)
        seconds, (tokens, _) = time_calls(functools.partial(searcher.decode, features, how), run.steps)
        setting = (f"{run.train.decoder}, {how.describe()}, batch {run.batch_images}, mean "
                   f"{mean_words(tokens, run.vocabulary):.1f} words, on {run.place}")
        rows.append((name, setting, number(run.batch_images / seconds), "captions/s"))
    return rows + [jpeg_row(encoder, searcher, run)]


def jpeg_row(encoder: encoders.Encoder, searcher: search.SequenceDecoder, run: Run) -> Row:
    """JPEG bytes -> pixels (Pillow on every CPU core, as a worker decodes) -> float encoder -> greedy, per batch."""
    say(JPEG)
    size, greedy, threads = encoder.input_size, decoding.Decoding(1, 0.0, MAX_WORDS), os.cpu_count()
    jpegs = [images.encode_jpeg(pixels) for pixels in random_pixels(run, size)]
    with ThreadPoolExecutor(threads) as pool:
        def caption():
            pixels = np.stack(list(pool.map(functools.partial(images.decode_image, size=size), jpegs)))
            return searcher.decode(encoder.encode(pixels)["spatial"], greedy)
        seconds, _ = time_calls(caption, run.steps)
    setting = (f"random-pixel JPEGs of {sum(map(len, jpegs)) / len(jpegs) / 1024:.0f} KB decoded by {threads} "
               f"threads, float encoder and greedy search on {run.place}, batch {run.batch_images}")
    return (JPEG, setting, number(run.batch_images / seconds), "captions/s")


def report(rows: List[Row], gpus: List[str], seconds: float) -> str:
    device = ", ".join(gpus) if gpus else "CPU only (no GPU visible)"
    return "\n".join([
        f"## GPU benchmark: {device}, TensorFlow {tf.__version__}", "",
        f"- command: `{harness.command_line('gpu')}`",
        f"- machine: {harness.machine()}; date: {harness.today()}; the whole run took {seconds:.0f} s",
        "- steady state: every value is timed after a warm-up call (training: after a first `fit` epoch of as many "
        "steps); random seeded inputs, untrained decoders", "",
        harness.markdown_table(["measurement", "setting", "value", "unit"], rows)])


def parse_args(argv: Optional[Sequence[str]]):
    parser = harness.argument_parser("gpu", __doc__)
    parser.add_argument("--smoke", action="store_true", help="every size tiny, to check the script (about a minute)")
    parser.add_argument("--encoder", metavar="PATH.keras", help="the float encoder (default: --tflite rebuilt)")
    parser.add_argument("--tflite", metavar="PATH.tflite", help=f"the TFLite encoder (default: {DEFAULT_TFLITE}; "
                        "without it the float encoder is keras MobileNetV2 with random weights)")
    for flag, what in (("batch_images", "images per extraction and captioning batch"),
                       ("batch_rows", "rows of 5 captions per training step"), ("steps", "timed steps or calls")):
        normal, smoke = SIZES[flag]
        parser.add_argument(f"--{flag}", type=int, metavar="N", help=f"{what} (default {normal}; smoke {smoke})")
    parser.add_argument("--out", metavar="FILE", help="also write the table to FILE")
    args = parser.parse_args(argv)
    if args.tflite is None:
        args.tflite = os.path.normpath(os.path.join(harness.ROOT, DEFAULT_TFLITE))
    elif not os.path.exists(args.tflite):
        raise SystemExit(f"error: --tflite {args.tflite!r} does not exist")
    if args.encoder and not args.encoder.endswith(".keras"):
        raise SystemExit(f"error: --encoder {args.encoder!r} is not a .keras file")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    sizes = {key: getattr(args, key, None) or both[args.smoke] for key, both in SIZES.items()}  # vocabulary: no flag
    small = dict(embedding_dim=32, units=32, transformer_layers=1) if args.smoke else {}
    gpus = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]
    keras.utils.set_random_seed(SEED)
    run = Run(**sizes, train=TrainConfig(decoder="transformer", seed=SEED, **small), place="GPU" if gpus else "CPU",
              rng=np.random.default_rng(SEED))
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as work:
        say("extraction")
        encoder, described = float_encoder(args, work)
        feature_shape = encoder.feature_info()["spatial"]["shape"]
        rows = extraction_rows(encoder, described, args.tflite, run)
        rows += decoder_rows(feature_shape, run) + finetune_rows(encoder, feature_shape, run)
        rows += captioning_rows(encoder, feature_shape, run)
    table = report(rows, gpus, time.time() - _STARTED)
    print(table)
    if args.out:
        pathlib.Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
