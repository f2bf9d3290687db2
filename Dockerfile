# syntax=docker/dockerfile:1
# dtrtrust: one image for the operator (runs as the non-root user below) and the node
# agent (its DaemonSet runs it as root, because it writes root-owned certs.d
# directories on the host).
#
#   docker build -t dtrtrust:0.1.0 .
#   docker run --rm dtrtrust:0.1.0 --version
#
# Both stages use the same Python image, pinned by version; pin it by digest too
# (python:3.11.x-slim-bookworm@sha256:...) when your build system resolves digests.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: wheels for dtrtrust and every dependency --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the package build reads (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed, nothing to build with -----------------------------
FROM ${PYTHON_IMAGE}
# Must equal the version in pyproject.toml (tests/deploy checks it).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="dtrtrust" \
      org.opencontainers.image.description="Puts a private registry's TLS trust (CA bundle and client certificate) on every node: kopf operator, node agent and single-host CLI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Install from the build stage's wheels only (--no-index: nothing is fetched or
# compiled here), then remove the installers: the image runs dtrtrust, nothing else.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "dtrtrust==${VERSION}" \
    && pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 65532 dtrtrust \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin dtrtrust
# The operator's user; deploy/operator.yaml runs as the same fixed UID/GID.
USER 65532:65532
WORKDIR /
ENTRYPOINT ["dtrtrust"]
CMD ["--help"]
