FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY fleet ./fleet
COPY protocols ./protocols
COPY api ./api
COPY simulators ./simulators
# Plain `.`, not `.[embedded]`: the image runs against a PostgreSQL of its own
# (FLEET_DATABASE_URL; docker-compose.yml), so it carries no PostgreSQL binaries.
RUN pip install --no-cache-dir .
# Not root: nothing in the image needs it.
RUN useradd --create-home fleet
USER fleet
EXPOSE 8000 5683/udp 9464
# Metrics on every address of the container, for a scraper on its network: they have no
# authentication (FLEET_METRICS_TOKEN adds one), so publish 9464 only to that network (docs/operations.md, Metrics).
ENV FLEET_HTTP_HOST=0.0.0.0 FLEET_METRICS_HOST=0.0.0.0
CMD ["fleet", "serve"]
