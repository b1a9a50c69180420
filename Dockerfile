# syntax=docker/dockerfile:1
#
# The airline backend: all seven binaries in one image.
#   airline          operator CLI (`airline migrate`, `airline seed`, `airline up`)
#   airline-gateway  the HTTP API
#   airline-catalog, airline-booking, airline-payment, airline-loyalty, airline-notify
#                    the workers
# The default command runs everything in one process (`airline up`); compose.yaml
# runs each binary in its own container instead. Configuration is by environment
# variable (AMQP_URL, DATABASE_URL, AIRLINE_HTTP_ADDR, AIRLINE_PREFIX, ...).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /app
# Only what the build reads: manifests, lockfile and the member crates (migrations
# and openapi.json are compiled in).
COPY Cargo.toml Cargo.lock ./
COPY contracts ./contracts
COPY services ./services
# target/ lives in a cache mount, so the binaries are copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/app/target,sharing=locked \
    cargo build --release --locked --workspace \
 && mkdir -p /out \
 && for bin in airline airline-gateway airline-catalog airline-booking \
               airline-payment airline-loyalty airline-notify; do \
        cp "target/release/$bin" /out/; \
    done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# curl is for health checks (GET /healthz).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 airline \
 && useradd --system --uid 10001 --gid airline --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin airline
COPY --from=builder /out/ /usr/local/bin/
# The binaries default to 127.0.0.1:8080, which is unreachable from outside a
# container; the gateway (or a worker's /healthz) listens on every interface here.
ENV AIRLINE_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
USER airline:airline
CMD ["airline", "up"]
