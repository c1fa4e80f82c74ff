# ablate — run `just` to list the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The release binary: training is numeric code, and release is what users time. The recipes
# that run it build it first when a source changed (`build`), saying so.
target := env_var_or_default("CARGO_TARGET_DIR", "target")
ablate := target / "release/ablate"

default:
    @just --list

# Run a pipeline (e.g. `just run pipelines/quickstart.yaml --jobs 2`).
run FILE *ARGS: build
    {{ablate}} run {{FILE}} {{ARGS}}

# Build target/release/ablate if a source changed (saying so); silent when it is up to date.
build:
    @scripts/build-ablate.sh

# Put `ablate` on your PATH (in ~/.cargo/bin), to run pipelines from any directory.
install:
    cargo install --locked --path crates/ablate-cli

# The wheel, target/wheels/ablate-*.whl (its path is printed last): the release binary and the
# Python module, for `pip install` into any venv. maturin (pyproject.toml) builds with cargo's
# release profile into the same target directory, so after `just build` it relinks nothing;
# maturin itself is installed into target/maturin the first time.
wheel:
    @[[ -x {{target}}/maturin/bin/maturin ]] || { python3 -m venv {{target}}/maturin && {{target}}/maturin/bin/pip install -q 'maturin>=1.5,<2'; }
    @rm -f {{target}}/wheels/ablate-*.whl
    {{target}}/maturin/bin/maturin build --release --out {{target}}/wheels
    @ls {{target}}/wheels/ablate-*.whl

# The CUDA binary (target/release/ablate with `--features cuda`): needs the CUDA toolkit, found
# through `CUDA_ROOT` (or `CUDA_PATH`, or nvcc on PATH). Without a toolkit, see
# ../shared/notes/cuda.md (a build environment from PyPI wheels).
build-cuda:
    cargo build --release -p ablate-cli --features cuda

# Show each instance of a pipeline, its key, and whether it is cached or why it will run.
plan FILE *ARGS: build
    {{ablate}} plan {{FILE}} {{ARGS}}

# Print a Parquet result table.
table FILE *ARGS: build
    {{ablate}} table {{FILE}} {{ARGS}}

# Any other ablate command (`just ablate ops`, `just ablate cache ls`).
ablate *ARGS: build
    {{ablate}} {{ARGS}}

# The whole test suite. The Slurm tests submit to a real cluster: this starts the single-node
# one first (installing Slurm from Debian's packages if needed; needs root or sudo).
test *ARGS: slurm-up
    cargo test --workspace {{ARGS}}

# Install (if needed) and start a single-node Slurm cluster on this machine.
slurm-up:
    scripts/slurm-up.sh

# Stop the single-node Slurm cluster.
slurm-down:
    scripts/slurm-down.sh

# Orchestration and training benchmarks; writes BENCHMARKS.md (`just bench --only orchestration`
# for the quick part; `--compare OTHER_BINARY` times an earlier build beside this one on orchestration,
# `--compare-examples DIR` runs an earlier build's training benchmarks (its target/release/examples) beside
# this one's).
bench *ARGS:
    python3 scripts/bench.py {{ARGS}}

# Reliability campaign: kill -9 mid-run, concurrent runs on one cache, parser fuzz, all in temp
# directories; prints a table, exits 1 if anything did not hold (not part of just test;
# `just chaos --quick` for a smoke run).
chaos *ARGS: build
    python3 scripts/chaos.py {{ARGS}}

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
