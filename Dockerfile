# tablesync server image: `tablesync serve` as a non-root user, the database on a volume.
#
#   docker build -t tablesync .
#   docker run -p 8080:8080 -v tablesync-data:/var/lib/tablesync tablesync
#
# Not built in CI (the CI machine has no docker daemon); see README.md, "Deployment".

# --- build ---------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --locked: the image gets exactly the dependency versions the tests ran with.
RUN cargo build --release --locked -p tablesync-cli \
 && install -D -m 0755 target/release/tablesync /out/tablesync

# --- run -----------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the platform roots TLS (PostgreSQL, the client commands) is verified
# against. curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tablesync --shell /usr/sbin/nologin tablesync \
 && install -d -o tablesync -g tablesync -m 0700 /var/lib/tablesync
COPY --from=build /out/tablesync /usr/local/bin/tablesync
USER tablesync
WORKDIR /var/lib/tablesync
# The SQLite database (and its -wal/-shm files). Unused when --database names PostgreSQL.
VOLUME ["/var/lib/tablesync"]
EXPOSE 8080
ENV RUST_LOG=info
# Liveness only (`/health` does no database work); orchestrators that route traffic should
# probe `/ready` instead, which answers 503 while the database is unreachable.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
# Listen on every interface inside the container; a config file can be mounted and named with
# `--config /etc/tablesync/tablesync.toml` (flags override it).
ENTRYPOINT ["tablesync"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--database", "/var/lib/tablesync/tablesync.db"]
