# syntax=docker/dockerfile:1
# The wearflow engine image: built in the Rust image, run as a non-root user in Debian slim.
#
#   docker build -t wearflow .
#   docker run --rm -e WEARFLOW_AUTH_TOKENS="me:admin:$(openssl rand -hex 16)" \
#     -p 127.0.0.1:8080:8080 -p 127.0.0.1:6875:6875 wearflow
#
# `run` refuses to start without credentials (README, "Access"); `demo` runs open.
# Without a config file the engine runs its embedded simulator; mount a wearflow.toml at
# /etc/wearflow/wearflow.toml and run `run --config /etc/wearflow/wearflow.toml` for Kafka
# (deploy/compose/ does). Checked by deploy/check.py; never built on the development machine
# (it has no container engine), see deploy/RUNBOOK.md.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# librdkafka is compiled from source by rdkafka-sys (its configure script, gcc, make, python3);
# zlib for its libz feature comes from the system through pkg-config.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config python3 zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds; the binary is
# copied out of the cache because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin wearflow \
 && install -D -m 0755 target/release/wearflow /out/wearflow

FROM ${RUNTIME_IMAGE}
# curl for the health check; zlib1g is part of the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wearflow \
 && useradd --system --uid 10001 --gid wearflow --home-dir /var/lib/wearflow --shell /usr/sbin/nologin wearflow \
 && install -d -o wearflow -g wearflow -m 0750 /var/lib/wearflow \
 && install -d -m 0755 /etc/wearflow
COPY --from=build /out/wearflow /usr/local/bin/wearflow

# Listen on every interface inside the container (the config defaults are loopback); the
# ports stay the defaults. The Postgres endpoint has no authentication: publish it only to
# trusted networks.
ENV WEARFLOW_HTTP_ADDR=0.0.0.0:8080 \
    WEARFLOW_PG_ADDR=0.0.0.0:6875 \
    WEARFLOW_DATA_DIR=/var/lib/wearflow
EXPOSE 8080 6875
VOLUME ["/var/lib/wearflow"]
USER 10001:10001
WORKDIR /var/lib/wearflow

# The engine stops cleanly on SIGINT (Ctrl-C); SIGTERM would end it without its shutdown.
STOPSIGNAL SIGINT
# /ready answers 200 once the first snapshot is published; a replay from `earliest` can take
# a while, hence the start period.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/ready || exit 1

ENTRYPOINT ["/usr/local/bin/wearflow"]
CMD ["run"]
