# syntax=docker/dockerfile:1
# One image with both daemons (and faultctl): the DaemonSet runs faultline-agent, the
# Deployment faultline-coordinator (daemonset/manifests/). Build from the repository root:
#   docker build -t registry.example.com/faultline/faultline:0.1.0 .
# The default user is non-root (65532, what the coordinator runs as); the agent's DaemonSet
# runs it as uid 0 with the capabilities it needs.

# --- build: Rust plus clang/llvm/libbpf-dev for the agent's eBPF programs (agent/build.rs) ---
# faultctl is built apart: it enables faultline-identity's dev-pki feature (the development CA,
# rcgen), and one cargo invocation would unify that feature into the daemons' build too.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev linux-libc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p faultline-agent -p faultline-coordinator \
 && cargo build --release --locked -p faultctl \
 && mkdir -p /out \
 && cp target/release/faultline-agent target/release/faultline-coordinator \
       target/release/faultctl /out/

# --- runtime: small Debian with CA certificates, no compiler, no shell tools we do not need ---
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 faultline \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin faultline \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/faultline-coordinator
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 7443 9466 9465
CMD ["/usr/local/bin/faultline-coordinator", "--help"]
