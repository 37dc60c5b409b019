# Build: release binary with the locked dependency set.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
# The dashboard, embedded into the binary at build time.
COPY ui ui
COPY benches benches
COPY examples examples
RUN cargo build --release --locked --bin eddy

# Run: slim Debian, non-root user, data under /var/lib/eddy.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/eddy --create-home eddy
COPY --from=build /src/target/release/eddy /usr/local/bin/eddy
USER eddy
# Beyond loopback eddy wants a tokens file (mount it; see docker-compose.yml). Make one line
# with: docker run --rm eddy token new admin --scopes admin
ENV EDDY_LISTEN=0.0.0.0:8080 \
    EDDY_DATA_DIR=/var/lib/eddy \
    EDDY_TOKENS_FILE=/run/secrets/eddy-tokens
VOLUME /var/lib/eddy
EXPOSE 8080
ENTRYPOINT ["eddy"]
CMD ["serve"]
