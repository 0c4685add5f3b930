"""Every config key of every stage, with its default, a one-line doc and its check: the one place they live.

`configs/*.yaml` hold only what differs from these defaults; `python -m captioner.config`
prints every key with its value in a given config.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping

from captioner import text
from captioner.config.settings import ConfigError, check_section, setting, suggestion
from captioner.decoder import DECODERS

_SMALLEST_SAMPLES = 2  # each self-critical sample's baseline is the mean of the image's other samples


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """`extract`: the feature extraction pipeline (pipelines/extract_features.py)."""
    encoder: str = setting("thumbnail", "registry name (see extract_features --help), a .tflite or a .keras path, "
                                        "local or gs://")
    weights: str = setting("none", "keras.applications weights: imagenet | none (random, seeded) | a weights "
                                   "file, local or gs://")
    spatial: bool = setting(True, "also store the encoder's last HxWxC map, which the attention decoder reads")
    batch_size: int = setting(32, "images per encoder call", minimum=1)
    num_shards: int = setting(0, "TFRecord files per split; 0 = one per worker bundle, no shuffle before writing",
                              minimum=0)
    min_word_count: int = setting(5, "train-caption words seen fewer times than this become <unk>", minimum=1)
    max_pixels: int = setting(50_000_000, "images with more pixels (width x height) are dead letters, checked "
                                          "before decoding (decompression bombs)", minimum=1)
    float_encoder: bool = setting(False, "with a .tflite MobileNet encoder: extract with its float Keras rebuild "
                                         "(captioner.encoders.from_tflite, written to OUTPUT/encoder/), which runs "
                                         "on GPUs and can be fine-tuned (train.finetune_encoder_epochs); Keras "
                                         "encoders (.keras, registry names) are float already")
    keep_images: bool = setting(False, "also keep each image in its record as the encoder saw it (JPEG at the "
                                       "encoder's input size, ~19 KB at 224x224), which fine-tuning the encoder "
                                       "(train.finetune_encoder_epochs) trains on")

    def __post_init__(self):
        check_section(self, "extract")


MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")  # keras.mixed_precision policies (none = float32)
SELECT_METRICS = ("bleu4", "cider_d")  # dev scores that can rank the epochs a job may export
SELF_CRITICAL_REWARDS = ("bleu4", "cider_d", "mixed")  # trainer/self_critical/rewards.py


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """`train`: the decoder trainer (trainer/task.py)."""
    decoder: str = setting("attention", "decoder architecture", choices=DECODERS)
    features: str = setting("spatial", "which stored features the decoder reads", choices=("pooled", "spatial"))
    embedding_dim: int = setting(256, "word embedding size", minimum=1)
    units: int = setting(256, "LSTM units, also the attention and hidden layers' width", minimum=1)
    dropout: float = setting(0.5, "dropout rate of the decoder's layers", minimum=0, below=1)
    max_length: int = setting(32, "words kept of each training caption (without <start>/<end>)", minimum=1)
    batch_size: int = setting(64, "captions per step per replica, in whole rows (batch_size // captions_per_row "
                                  "images); the global batch is this x replicas", minimum=1)
    captions_per_row: int = setting(0, "captions of one image per batch row, which share its image side (and, "
                                       "fine-tuning, its CNN pass); 0 = the train split's mean captions per image "
                                       "(Flickr8k: 5), 1 = every caption on its own", minimum=0, below=9)
    epochs: int = setting(15, "cross-entropy epochs", minimum=1)
    learning_rate: float = setting(0.001, "Adam's learning rate (the peak of the cosine schedule)", above=0)
    lr_schedule: str = setting("cosine", "learning-rate schedule over all steps", choices=("constant", "cosine"))
    warmup_epochs: float = setting(1.0, "epochs of linear warm-up before the cosine decay", minimum=0)
    label_smoothing: float = setting(0.1, "target mass spread uniformly over the vocabulary", minimum=0, below=1)
    early_stopping_patience: int = setting(3, "stop after this many epochs without a better dev loss; 0 = never",
                                           minimum=0)
    strategy: str = setting("mirrored", "mirrored: MirroredStrategy over every visible GPU (else the CPU); "
                                        "default: one device; multi_worker: MultiWorkerMirroredStrategy over the "
                                        "machines TF_CONFIG names (Vertex AI sets it), every GPU of each",
                            choices=("mirrored", "default", "multi_worker"))
    input_sharding: str = setting("auto", "with strategy=multi_worker, how workers split the train split: file "
                                          "(each reads its own shards), data (each reads all and keeps its part "
                                          "of every global batch), auto (file when there are at least 4 shards "
                                          "per worker)", choices=("auto", "file", "data"))
    shuffle_buffer: int = setting(20000, "(image, caption) examples the shuffle buffer holds", minimum=0)
    sort_window_batches: int = setting(16, "batches formed from length-sorted windows of this many batches "
                                           "(about 2x faster epochs); 0 or 1 = off", minimum=0)
    seed: int = setting(42, "seed of the weights' initialisation and of every shuffle")
    finetune_encoder_epochs: int = setting(0, "epochs of training the encoder (CNN) with the decoder on the kept "
                                              "images (extract.keep_images) after the cross-entropy epochs; 0 = the "
                                              "encoder stays as extracted", minimum=0)
    finetune_encoder_blocks: int = setting(8, "with finetune_encoder_epochs: how many of the encoder's blocks are "
                                              "trained, counted from the top (the rest stay frozen)", minimum=1)
    encoder_learning_rate: float = setting(1e-4, "with finetune_encoder_epochs: Adam's learning rate of the encoder "
                                                 "(the peak of a cosine over those epochs)", above=0)
    finetune_learning_rate: float = setting(1e-4, "with finetune_encoder_epochs: the decoder's learning rate over "
                                                  "those epochs (a cosine from this peak)", above=0)
    augment: bool = setting(True, "with finetune_encoder_epochs: random resized crops (60-100% of the area) and "
                                  "horizontal flips of the training images")
    self_critical_epochs: int = setting(0, "epochs of self-critical fine-tuning on sampled captions after the "
                                           "cross-entropy ones (and the encoder's fine-tuning)", minimum=0)
    self_critical_samples: int = setting(5, "captions sampled per image; each is scored against the mean of the "
                                            "others", minimum=_SMALLEST_SAMPLES)
    self_critical_learning_rate: float = setting(5e-5, "Adam's learning rate during self-critical fine-tuning",
                                                 above=0)
    self_critical_reward: str = setting("bleu4", "what a sampled caption earns: bleu4 (its gain in the corpus BLEU-4 "
                                                 "of the step's samples), cider_d (its CIDEr-D against the train "
                                                 "references), mixed (the sum of both)",
                                        choices=SELF_CRITICAL_REWARDS)
    select_metric: str = setting("bleu4", "the dev score that picks the exported self-critical epoch (the "
                                          "cross-entropy model is epoch 0); cross-entropy epochs are picked by "
                                          "dev loss", choices=SELECT_METRICS)
    mixed_precision: str = setting("none", "Keras dtype policy of the decoder: none (float32), mixed_float16 (GPUs; "
                                           "with loss scaling) or mixed_bfloat16; logits, loss and the exported "
                                           "bundle stay float32", choices=MIXED_PRECISION)
    xla: bool = setting(False, "compile the cross-entropy train step with XLA (Keras jit_compile)")
    transformer_layers: int = setting(2, "with decoder=transformer: decoder blocks (self-attention, attention "
                                         "over the image, feed-forward)", minimum=1)
    transformer_heads: int = setting(4, "with decoder=transformer: attention heads; train.units must be a "
                                        "multiple of it", minimum=1)

    def __post_init__(self):
        check_section(self, "train")
        if self.decoder == "transformer" and self.units % self.transformer_heads:
            raise ConfigError(f"train.units={self.units} is not a multiple of train.transformer_heads="
                              f"{self.transformer_heads}: the transformer splits its width evenly over its heads")


@dataclasses.dataclass(frozen=True)
class CaptionConfig:
    """`caption`: decoding, in the caption job and in the trainer's dev scoring."""
    beam_size: int = setting(3, "beam width; 1 = greedy", minimum=1)
    length_penalty: float = setting(0.7, "GNMT length penalty alpha (longer captions rank higher); 0 = none",
                                    minimum=0)
    max_length: int = setting(32, "longest caption decoded, in words", minimum=1)
    batch_size: int = setting(64, "images per decoding batch", minimum=1)
    gallery_size: int = setting(60, "rows in report.html: a third the best by sentence BLEU, a third the worst, the "
                                    "rest a fixed random sample of the others", minimum=0)
    parquet: bool = setting(True, "also write the captions as Parquet (a fixed schema BigQuery loads as it is)")
    csv: bool = setting(True, "also write the captions as CSV")
    num_shards: int = setting(0, "files per output (captions, dead letters); 0 = as many as the runner likes",
                              minimum=0)
    share_model: bool = setting(False, "one copy of the model per machine, shared by its worker processes "
                                       "(Beam's share_model_across_processes): for a GPU worker with many cores")
    model_copies: int = setting(1, "with share_model: how many shared copies a machine loads", minimum=1)
    field_scores: bool = setting(True, "score METEOR, ROUGE-L and CIDEr-D in both tokenizations (metrics.json); false "
                                       "keeps bleu.json's BLEU and each row's sentence BLEU only: the flat-memory "
                                       "path for very large sets (bench/RESULTS.md)")
    meteor: bool = setting(True, "score METEOR (Java, with a 2 GB heap per worker process, started by the first "
                                 "caption with references); false lists it as skipped in metrics.json")

    def __post_init__(self):
        check_section(self, "caption")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """`text`: how captions are cleaned into tokens, decided once at extraction (the manifest records it)."""
    # keep_articles scored higher on Flickr8k dev with the COCO evaluation (CIDEr-D 42.9 vs 33.7, bench/RESULTS.md)
    cleaning: str = setting(text.KEEP_ARTICLES, "keep_articles: lower case, letters only, every word kept; "
                                                "tutorial: the classic tutorials' (one-letter words such as 'a' "
                                                "dropped), for like-for-like comparison with them. Read at "
                                                "extraction; the trainer and the caption job use what the features "
                                                "or bundle record", choices=text.CLEANINGS)

    def __post_init__(self):
        check_section(self, "text")


SECTIONS = {"extract": ExtractConfig, "train": TrainConfig, "caption": CaptionConfig, "text": TextConfig}


@dataclasses.dataclass(frozen=True)
class Config:
    """One config: a section per stage, each checked when it is made."""
    extract: ExtractConfig = dataclasses.field(default_factory=ExtractConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    caption: CaptionConfig = dataclasses.field(default_factory=CaptionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """Plain values, as bundle.json records them."""
        return dataclasses.asdict(self)

    def with_values(self, source: str = "the caller", **sections: Mapping[str, Any]) -> "Config":
        """A copy with some keys changed, e.g. `with_values(train={"epochs": 3})`; checked like a file."""
        merged = self.to_dict()
        for section, values in sections.items():
            merged.setdefault(section, {}).update(values)
        return from_mapping(merged, source)


def known_keys() -> list:
    """Every `section.key`, in definition order."""
    return [f"{name}.{field.name}" for name, cls in SECTIONS.items() for field in dataclasses.fields(cls)]


def key_suggestion(key: str) -> str:
    """'; did you mean S.K?': the same key name in another section first, else the closest spelling."""
    name = key.rpartition(".")[2]
    same_name = [known for known in known_keys() if known.endswith("." + name)]
    return f"; did you mean {same_name[0]}?" if same_name else suggestion(key, known_keys())


def from_mapping(data: Any, source: str) -> Config:
    """A checked Config from {section: {key: value}}; keys left out take their defaults.

    Unknown sections and keys fail with the closest known one suggested.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config is a mapping of sections ({', '.join(SECTIONS)}), "
                          f"not {type(data).__name__}")
    sections = {}
    for name, values in data.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {name!r}{suggestion(str(name), SECTIONS)} "
                              f"(known: {', '.join(SECTIONS)})")
        values = {} if values is None else values
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {name!r} must map keys to values, not {type(values).__name__}")
        fields = {field.name for field in dataclasses.fields(SECTIONS[name])}
        for key in values:
            if key not in fields:
                raise ConfigError(f"{source}: unknown key {name}.{key}{key_suggestion(f'{name}.{key}')}")
        try:
            sections[name] = SECTIONS[name](**values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
    return Config(**sections)
