# streamkm service image: `docker build -t streamkm .`, then `docker run streamkm serve --help`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Metadata first: the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY engine/ engine/
COPY metrics/ metrics/
COPY model/ model/
COPY stream/ stream/
COPY api/ api/
COPY estimators/ estimators/
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /home/streamkm --create-home streamkm
USER streamkm
WORKDIR /home/streamkm

# Inside a container the metrics endpoint must listen beyond loopback for Prometheus to reach it.
# Numba caches compiled kernels beside the sources by default, which a non-root user cannot write.
# The kernels are compiled here, into the image, for the CPU baseline STREAMKM_CPU (an LLVM name:
# x86-64-v3 is AVX2 and FMA; x86-64-v4 adds AVX-512, faster on wide rows where every node has
# it). A container on a CPU without that baseline compiles its kernels at start instead
# (stream/compiled.py), which costs about a minute but is never wrong.
ARG STREAMKM_CPU=x86-64-v3
ENV STREAMKM_METRICS_HOST=0.0.0.0 \
    STREAMKM_METRICS_PORT=9100 \
    NUMBA_CACHE_DIR=/home/streamkm/.cache/numba \
    NUMBA_CPU_NAME=${STREAMKM_CPU}
RUN streamkm warmup

EXPOSE 9100
ENTRYPOINT ["streamkm"]
CMD ["serve"]
