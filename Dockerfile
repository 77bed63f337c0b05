# The cluster image: every Ray node (cluster launcher, KubeRay) and `mlt` itself.
# CUDA 13 runtime (nvidia-dali-cuda130 needs CUDA 13, i.e. an NVIDIA driver >= 580 on the host),
# Python 3.11, the CUDA build of the pinned torch, then the package with pyproject.toml's pins.
# tests/test_cluster_configs.py checks that every name==version here matches pyproject.toml.
#
#   docker build -t mlt:0.1.0 .
#   docker run --rm --gpus all mlt:0.1.0 --help            # the entrypoint is `mlt`
#   docker run --rm -it --entrypoint bash mlt:0.1.0        # a shell (Ray's launcher does this)
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG NVIDIA_INDEX_URL=https://pypi.nvidia.com
ARG UID=1000

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.11 (deadsnakes), plus what Ray's cluster launcher and KubeRay's probes call:
# rsync, ssh client, wget, curl.
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent ca-certificates \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev \
        rsync openssh-client wget curl tini libgomp1 \
    && apt-get purge -y software-properties-common \
    && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

# A non-root user that owns the virtual environment (Ray's pip runtime envs and the
# launcher's head_setup_commands install into it).
RUN useradd --create-home --uid ${UID} --shell /bin/bash mlt \
    && python3.11 -m venv ${VIRTUAL_ENV} \
    && chown -R mlt:mlt ${VIRTUAL_ENV}
USER mlt
RUN pip install --upgrade pip setuptools wheel

# torch first, from the CUDA index: the CUDA build (2.13.0+cu130) of the pinned version.
RUN pip install --index-url ${TORCH_INDEX_URL} torch==2.13.0

# Then the package and its pins; constraints.txt forbids any other torch (2.13.0+cu130 satisfies it).
WORKDIR /app
COPY --chown=mlt:mlt pyproject.toml README.md constraints.txt ./
COPY --chown=mlt:mlt mlt ./mlt
COPY --chown=mlt:mlt featurestore ./featurestore
COPY --chown=mlt:mlt jobs ./jobs
COPY --chown=mlt:mlt configs ./configs
RUN pip install --extra-index-url ${NVIDIA_INDEX_URL} -c constraints.txt \
        . \
        "ray[default,train]==2.60.0" \
        "mlflow==3.17.2" \
        "nvidia-dali-cuda130==2.4.0" \
    && python -c "import torch, sys; v = torch.__version__; print('torch', v, 'cuda', torch.version.cuda); sys.exit(0 if v.startswith('2.13.0') and torch.version.cuda else 1)" \
    && mlt --version

ENTRYPOINT ["/usr/bin/tini", "--", "mlt"]
CMD ["--help"]
