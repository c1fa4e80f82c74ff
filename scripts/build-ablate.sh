#!/usr/bin/env bash
# Builds the release binary (target/release/ablate) when a source is newer than it, and says
# so first: the first build takes minutes, and `cargo run --quiet` used to be silent all along.
# Up to date, it prints nothing and does not start cargo. Arguments go to `cargo build`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/ablate"
# What the binary is built from: manifests, the lock file, build scripts and `src/` (a changed
# test or bench does not count: it would announce a build that relinks nothing, every time).
newer() {
    find Cargo.toml Cargo.lock crates -newer "$bin" \
        \( -path '*/src/*' -o -name Cargo.toml -o -name Cargo.lock -o -name build.rs \) \
        -type f -print -quit 2>/dev/null
}
if [[ -x $bin && -z $(newer) ]]; then
    exit 0
fi
echo "building ablate (release; a few minutes the first time)…" >&2
cargo build --release -p ablate-cli "$@"
# Cargo leaves the binary alone when nothing it is built from changed (a file touched, not
# edited): mark it current so the next run does not announce a build again.
touch "$bin"
