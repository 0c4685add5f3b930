# The trainer image: GPU TensorFlow (tensorflow[and-cuda] brings CUDA and cuDNN as wheels, so a plain
# Python base is enough; the host needs only the NVIDIA driver and, for `docker run`, the NVIDIA
# container toolkit). MirroredStrategy uses every GPU the container can see.
#
#   docker build -f docker/trainer.Dockerfile -t IMAGE .
#   docker run --gpus all IMAGE --config flickr8k --features gs://B/features --job_dir gs://B/runs/r1
#
# The same image runs as a Vertex AI custom job (worker pool container-image-uri=IMAGE, args = the flags).

FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/captioner
COPY . /opt/captioner

RUN CAPTIONER_GPU=1 pip install '.[gpu]' \
    && pip check \
    && cd / && python -c "import tensorflow, captioner, trainer; print('tensorflow', tensorflow.__version__)"

# Paths are resolved against the working directory; keep it out of the source tree.
WORKDIR /workspace
ENTRYPOINT ["python", "-m", "trainer.task"]
