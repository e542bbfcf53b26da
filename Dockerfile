# weir: the ingress controller and its data plane in one static-enough binary.
# Build:  docker build -t weir:dev .
# The build stage uses the toolchain pinned in rust-toolchain.toml; the
# runtime stage is a slim Debian (glibc for the binary, CA certificates for
# https JWKS, OIDC discovery and rediss://) running as a non-root user.
# `make test` runs this file's build command and checks the paths it copies
# (tests/dockerfile-check.sh), since no Docker engine runs in CI.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weir

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="Kubernetes ingress controller and API gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/weir /usr/local/bin/weir
# 65532: a numeric non-root user, so runAsNonRoot can verify it.
USER 65532:65532
# HTTP, admin (/healthz, /readyz, /metrics).
EXPOSE 8080 10254
ENTRYPOINT ["weir"]
CMD ["run"]
