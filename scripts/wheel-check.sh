#!/usr/bin/env bash
# CI's check of the wheel (issue 26), as a user gets it: builds it (`just wheel`), installs it
# into a fresh venv with its `pandas` and `test` extras (pip needs the network), then runs the
# installed `ablate` on a pipeline whose `cmd` stage is a Python script using `import ablate`
# (params, a metrics log with a NaN, a crash resumed from the checkpoint, final metrics), reads
# the results back with `ablate.runs`, and runs the module's unit tests. Everything it runs is in
# a temporary directory, removed at the end. Exits 1 with a message on the first thing that
# does not hold.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

die() {
    echo "wheel-check: FAILED: $*" >&2
    exit 1
}

tmp=$(mktemp -d /tmp/ablate-wheel-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
venv=$tmp/venv
python3 -m venv "$venv" ||
    die "failed to create a venv with \`python3 -m venv\` (hint: on Debian, apt-get install python3-venv)"

# --- the wheel (after a fresh venv: a machine without venv fails before the build) ------
start=$(date +%s%N)
built=$(just wheel) || die "\`just wheel\` failed"
ms=$((($(date +%s%N) - start) / 1000000))
wheel=$(tail -n 1 <<<"$built")
[[ -f $wheel ]] || die "\`just wheel\` printed \`$wheel\`, which is no file"
wheel=$(realpath "$wheel")
version=$(basename "$wheel" | cut -d- -f2)
bytes=$(stat -c %s "$wheel")
echo "wheel-check: $(basename "$wheel"): $((bytes / 1000000)).$((bytes / 100000 % 10)) MB," \
    "built in $((ms / 1000)).$((ms / 100 % 10)) s (just wheel)"

"$venv/bin/pip" install -q --disable-pip-version-check "$wheel[pandas,test]" ||
    die "failed to pip install \`$wheel[pandas,test]\` (pyarrow, pandas and pytest come from PyPI: network needed)"
# As an activated venv would: its `bin/` first, so `ablate` and `python3` are the venv's.
export PATH="$venv/bin:$PATH"

# --- the installed command -------------------------------------------------------------------
[[ $(command -v ablate) == "$venv/bin/ablate" ]] ||
    die "\`ablate\` on PATH is \`$(command -v ablate)\`, not the venv's \`$venv/bin/ablate\`"
shown=$(ablate --version) || die "\`$venv/bin/ablate --version\` failed"
[[ $shown == "ablate $version" ]] || die "\`ablate --version\` says \`$shown\`; the wheel is version $version"
echo "wheel-check: $venv/bin/ablate --version: $shown"
[[ $(python3 -c 'import ablate; print(ablate.__version__)') == "$version" ]] ||
    die "ablate.__version__ is not the wheel's version $version"

# --- a pipeline whose cmd stage uses the module ----------------------------------------------
# Two instances of a toy training. Each crashes once after step 2 (a marker in its checkpoint
# directory says it already did); `retries: 1` runs it again, and the retry resumes from the
# saved step (`resumed_from`). The lr=2.5 one logs a NaN loss at step 4: it has diverged, and
# with `diverged: record` it is a result holding the steps before the divergence.
p=$tmp/pipeline
mkdir -p "$p"
cat >"$p/p.yaml" <<'EOF'
name: wheel-check
stages:
  train:
    op: cmd
    matrix: { lr: [0.1, 2.5] }
    params:
      run: python3 train.py
      deps: [train.py]
      steps: 6
      opt: sgd
    retries: 1
    diverged: record
EOF
cat >"$p/train.py" <<'EOF'
import json
import math
import sys

import ablate

p = ablate.params({"lr": 0.1, "steps": 3, "opt": "sgd"})
ckpt = ablate.checkpoint_dir()
state = ckpt / "state.json"
start, w = 0, 1.0
if state.exists():
    saved = json.loads(state.read_text())
    start, w = saved["step"] + 1, saved["w"]
for step in range(start, p["steps"]):
    w *= 1 - p["lr"]
    loss = float("nan") if p["lr"] > 1 and step == 4 else w * w
    ablate.log(step=step, loss=loss, w=w)
    state.write_text(json.dumps({"step": step, "w": w}))
    if step == 2 and not (ckpt / "crashed").exists():
        (ckpt / "crashed").touch()
        sys.exit("crashing on purpose after step 2; the retry resumes from the checkpoint")
ablate.final(resumed_from=start, w_final=w, threads=ablate.threads())
EOF
echo "wheel-check: ablate run p.yaml (a cmd stage using import ablate)"
(cd "$p" && ablate run p.yaml) || die "\`ablate run p.yaml\` failed (in \`$p\`)"

# Read back from the pipeline's directory, where no `ablate` directory shadows the venv's.
(cd "$p" && python3 - "$venv" <<'EOF') || die "the results read back with ablate.runs are not what the pipeline computed"
import math
import pathlib
import sys

import ablate
import pandas as pd
from pandas.api import types

venv = pathlib.Path(sys.argv[1])
assert pathlib.Path(ablate.__file__).resolve().is_relative_to(venv.resolve()), ablate.__file__
df = ablate.runs("p.yaml")
assert isinstance(df, pd.DataFrame), type(df)
assert sorted(df["lr"].unique()) == [0.1, 2.5], df["lr"].unique()
# Params are typed columns: a float, a nullable integer, a string.
assert types.is_float_dtype(df["lr"]), df.dtypes
assert types.is_integer_dtype(df["steps"]) and (df["steps"] == 6).all(), df.dtypes
assert types.is_string_dtype(df["opt"]) and (df["opt"] == "sgd").all(), df.dtypes

good = df[df["lr"] == 0.1]
assert (good["status"] == "done").all(), good["status"].unique()
# The curve is whole across the crash: steps 0-2 from the first attempt, 3-5 from the retry.
loss = good[(good["metric"] == "loss") & ~good["final"]]
assert sorted(loss["step"]) == [0, 1, 2, 3, 4, 5], sorted(loss["step"])
final = good[good["final"]].set_index("metric")["value"]
assert final["resumed_from"] == 3, final
assert math.isclose(final["w_final"], 0.9**6), final
assert math.isclose(final["loss"], 0.9**12), final
assert final["threads"] == 1, final

bad = df[df["lr"] == 2.5]
assert (bad["status"] == "diverged").all(), bad["status"].unique()
assert not bad["final"].any(), bad[bad["final"]]
assert bad["step"].max() == 3, bad
assert sorted(bad[bad["metric"] == "loss"]["step"]) == [0, 1, 2, 3], bad

entry = ablate.entry(good["instance"].iloc[0])
assert entry["path"].is_dir(), entry
print("wheel-check: ablate.runs: %d rows; lr=0.1 done, resumed from step 3; lr=2.5 diverged at step 4" % len(df))
EOF

# --- the module's unit tests -----------------------------------------------------------------
[[ -d python/tests ]] || die "\`python/tests\` (the module's unit tests) is missing"
(cd "$root" && python3 -m pytest python/tests -q -p no:cacheprovider) || die "the module's unit tests failed"

echo "wheel-check: ok"
