# nsprov: docker build -t nsprov .
# Stage 1 builds a wheel; stage 2 installs it (runtime dependencies only) on a
# slim base and runs as an unprivileged user with a read-only root filesystem.
# BASE is any image with python3 (>= 3.11), pip, groupadd and useradd:
#   docker build --build-arg BASE=registry.example.com/python:3.11-slim -t nsprov .
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[server]'

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels come in through a bind mount, not a COPY: no layer of the image holds them.
# kubernetes' asyncio client (kubernetes/aio, 65 MB) and aiohttp-retry, which only it uses,
# go: nsprov's own event-loop calls (core/kubeasync.py) use aiohttp directly, which stays;
# the import check fails the build if anything nsprov imports is gone.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels 'nsprov[server]' \
    && pip uninstall --yes --quiet aiohttp-retry \
    && rm -rf "$(python3 -c 'import kubernetes, os; print(os.path.dirname(kubernetes.__file__))')/aio" \
    && python3 -c 'import nsprov.app, nsprov.cli, nsprov.core.kubeasync, kubernetes.client, kubernetes.watch' \
    && groupadd --gid 10001 nsprov \
    && useradd --uid 10001 --gid nsprov --no-create-home --shell /usr/sbin/nologin nsprov
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["nsprov"]
CMD ["serve"]
