FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fleet ./fleet
COPY protocols ./protocols
COPY api ./api
COPY simulators ./simulators
RUN pip install --no-cache-dir .
# PostgreSQL refuses to run as root; the image runs Fleet as an ordinary user.
RUN useradd --create-home fleet
USER fleet
EXPOSE 8000 5683/udp 9464
# Metrics on every address of the container, for a scraper on its network: they have no
# authentication (FLEET_METRICS_TOKEN adds one), so publish 9464 only to that network (README, Metrics).
ENV FLEET_HTTP_HOST=0.0.0.0 FLEET_METRICS_HOST=0.0.0.0
CMD ["fleet", "serve"]
