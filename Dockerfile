# DTLSSocket (tinydtls, for coaps) has no wheel on PyPI: build it here, where the compiler and
# autotools its setup.py runs stay behind, at the version pyproject.toml pins.
FROM python:3.11-slim AS dtls-wheel
RUN apt-get update && apt-get install -y --no-install-recommends autoconf automake libtool gcc libc6-dev make \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml /tmp/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels "$(grep -o 'DTLSSocket==[0-9.]*' /tmp/pyproject.toml)"

FROM python:3.11-slim
WORKDIR /app
COPY --from=dtls-wheel /wheels /tmp/wheels
COPY pyproject.toml README.md LICENSE ./
COPY fleet ./fleet
COPY protocols ./protocols
COPY api ./api
COPY simulators ./simulators
# Plain `.`, not `.[embedded]`: the image runs against a PostgreSQL of its own
# (FLEET_DATABASE_URL; docker-compose.yml), so it carries no PostgreSQL binaries.
RUN pip install --no-cache-dir --find-links /tmp/wheels . && rm -rf /tmp/wheels
# Not root: nothing in the image needs it.
RUN useradd --create-home fleet
USER fleet
EXPOSE 8000 5683/udp 5684/udp 9464
# Metrics on every address of the container, for a scraper on its network: they have no
# authentication (FLEET_METRICS_TOKEN adds one), so publish 9464 only to that network (docs/operations.md, Metrics).
ENV FLEET_HTTP_HOST=0.0.0.0 FLEET_METRICS_HOST=0.0.0.0
# A node: a supervisor and its worker processes, as many device-edge workers as the container's
# cores (its cpuset, at most its CPU quota) and half as many HTTP ones; --coap-workers/--http-workers (or FLEET_COAP_WORKERS,
# FLEET_HTTP_WORKERS) set them (docs/scaling.md, Processes of a node).
CMD ["fleet", "serve"]
