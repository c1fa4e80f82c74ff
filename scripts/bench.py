#!/usr/bin/env python3
"""`just bench`: ablate's orchestration and training benchmarks.

Measures, on this machine, in one run (so ratios are comparable):
  - planning generated sweeps of 1k and 10k `echo` instances (`ablate plan`, empty cache): time and peak RSS;
  - a fully cached (no-op) rerun of the same sweeps (`ablate run`, everything a cache hit);
  - planning the 10k sweep written as a `matrix` axis plus one `include` entry per value, beside the
    plain axis (the include merge was quadratic, #21);
  - orchestration cost per `cmd` instance: 1k instances of `true` at --jobs 2, against the cost of
    spawning `sh -c true` itself;
  - a `cmd` sweep of 4 PyTorch trainings (scripts/bench_torch_cmd.py) at --jobs 2, with the
    thread variables ablate gives a program from its CPU share, and without them (the program
    started under `env -u OMP_NUM_THREADS ...`, as every program was before #21), alternated;
  - training steps/s of train.flow's model (2→32 lift, 10 residual steps, hidden 64, batch 256),
    shared and unshared, 1 and 2 threads; and PyTorch on the same model side by side when
    `$ABLATE_BENCH_PYTHON` (default python3) can import torch;
  - training tokens/s of train.lm's transformers (bytes, d_model 128, 2 layers, 4 heads, d_ff 512,
    seq 128, batch 32; decoder-only and encoder-decoder) at 2 threads, and the same network in
    PyTorch (scripts/bench_torch_lm.py), the two run alternately, each twice;
  - fused sweeps (#23): a 32-member train.flow sweep (4 lr × 8 seeds at rousseau2020.yaml's size) and
    a 16-member train.lm sweep (4 lr × 4 seeds at ablation.yaml's size), each run with `fuse: auto`
    (the flows; `fuse: on` for the LMs, which `auto` fuses only on a GPU) and with `fuse: off` from
    an empty cache at --jobs 2, alternated; and the flow sweep's models
    trained by PyTorch as a loop, a torch.func vmap ensemble and hand-batched baddbmm
    (scripts/bench_torch_fused.py) beside ablate's fused trainer (examples/fused_flow_bench.rs).
Prints a Markdown table and writes it to BENCHMARKS.md. Medians of several runs; the machine is
shared and noisy, so read the ratios, not the third digit.

  --only orchestration|training|sweeps
                                  measure one part (training and sweeps need minutes); the rows of
                                  the other parts are kept from BENCHMARKS.md, and its header says so
  --compare BIN                   time another ablate binary (say, a build of an earlier revision)
                                  on the orchestration measures too, alternated with this one, and
                                  show its figures beside them
  --compare-examples DIR          run another build's train_flow_bench and lm_bench (DIR holds them,
                                  say an earlier revision's target/release/examples) on the training
                                  measures, alternated with this build's, and show their figures
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ablate")
TRAIN_BENCH = os.path.join(ROOT, "target", "release", "examples", "train_flow_bench")
LM_BENCH = os.path.join(ROOT, "target", "release", "examples", "lm_bench")
FUSED_FLOW_BENCH = os.path.join(ROOT, "target", "release", "examples", "fused_flow_bench")
REPEATS = int(os.environ.get("ABLATE_BENCH_REPEATS", "5"))


def sh(*args, **kw):
    return subprocess.run(args, check=True, cwd=kw.pop("cwd", ROOT), **kw)


def timed(args, cwd=None):
    """Wall seconds and peak RSS (KiB) of one command, output discarded."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + args, cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"benchmark command failed ({p.returncode}): {' '.join(args)}\n{p.stderr}")
    return dt, int(p.stderr.strip().splitlines()[-1])


def median_of(args, cwd, n=REPEATS):
    runs = [timed(args, cwd) for _ in range(n)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def echo_sweep(path, n):
    values = ", ".join(str(i) for i in range(n))
    with open(path, "w") as f:
        f.write(f"name: sweep{n}\nstages:\n  s:\n    op: echo\n    matrix:\n      value: [{values}]\n")


def include_sweep(path, n):
    """The sweep of `echo_sweep`, each value also an `include` entry (setting echo's own default)."""
    values = ", ".join(str(i) for i in range(n))
    entries = "".join(f"      - {{ value: {i}, sleep_ms: 0 }}\n" for i in range(n))
    with open(path, "w") as f:
        f.write(f"name: include{n}\nstages:\n  s:\n    op: echo\n    matrix:\n      value: [{values}]\n"
                f"    include:\n{entries}")


def beside(compare, label, cmd, warm=False):
    """Median seconds of this binary's `cmd` and, with --compare, of the other binary's, run in
    alternation so that both see the same machine. `cmd(binary, suffix)` gives the command; the
    other binary's gets suffix `-compare`, for a results directory of its own (runs.parquet may
    differ between versions). `warm`: one untimed run of the other binary first, as this one had."""
    if not compare:
        t, rss = median_of(cmd(BIN, ""), None)
        return t, rss, ""
    if warm:
        timed(cmd(compare, "-compare"))
    mine, theirs = [], []
    for _ in range(REPEATS):
        mine.append(timed(cmd(BIN, ""), None))
        theirs.append(timed(cmd(compare, "-compare"), None))
    t, rss = statistics.median(r[0] for r in mine), max(r[1] for r in mine)
    return t, rss, f"; {label}: {statistics.median(r[0] for r in theirs):.3f} s"


def cmd_sweep(path, n):
    values = ", ".join(str(i) for i in range(n))
    with open(path, "w") as f:
        f.write(f"name: cmd{n}\nstages:\n  c:\n    op: cmd\n    params: {{ run: \"true\" }}\n"
                f"    matrix:\n      i: [{values}]\n")


def torch_cmd_threads(work):
    """4 PyTorch `cmd` instances at --jobs 2: with the thread variables from the CPU share
    (each program gets OMP_NUM_THREADS=1 ...), and without (as before #21)."""
    python = os.environ.get("ABLATE_BENCH_PYTHON", "python3")
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0:
        return [("4 PyTorch `cmd` instances, --jobs 2", "not run", "", f"`{python}` cannot import torch")]
    print("cmd sweep of 4 PyTorch trainings, with and without thread variables ...", file=sys.stderr)
    script = os.path.join(ROOT, "scripts", "bench_torch_cmd.py")
    unset = " ".join(f"-u {v}" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    runs = {"with": f"{python} {script}", "without": f"env {unset} {python} {script}"}
    walls = {k: [] for k in runs}
    for i in range(2):
        for kind, run in runs.items():
            f = os.path.join(work, f"torch_{kind}.yaml")
            with open(f, "w") as out:
                out.write(f"name: torch_{kind}\nstages:\n  train:\n    op: cmd\n"
                          f"    params: {{ run: {json.dumps(run)} }}\n    matrix: {{ seed: [0, 1, 2, 3] }}\n")
            cache = os.path.join(work, f"torch_cache_{kind}{i}")
            walls[kind].append(timed([BIN, "--cache", cache, "--results", os.path.join(work, "torch_res"),
                                      "run", f, "--jobs", "2", "--json"], work)[0])
    w, wo = statistics.median(walls["with"]), statistics.median(walls["without"])
    return [("4 PyTorch `cmd` instances (scripts/bench_torch_cmd.py), --jobs 2", f"{w:.1f} s", "",
             f"without the thread variables (as before #21): {wo:.1f} s → {wo / w:.1f}× slower; "
             f"medians of 2, alternated")]


def orchestration(compare):
    rows = []
    label = f"`{compare}`" if compare else ""
    work = tempfile.mkdtemp(prefix="ablate-bench-")
    try:
        plain = {}
        for n in (1000, 10000):
            f = os.path.join(work, f"sweep{n}.yaml")
            echo_sweep(f, n)
            cache, results = os.path.join(work, f"cache{n}"), os.path.join(work, f"results{n}")
            print(f"plan and no-op rerun, {n} instances ...", file=sys.stderr)
            t, rss, other = beside(compare, label, lambda b, _: [b, "--cache", os.path.join(work, "empty"), "plan", f, "--format", "json"])
            plain[n] = t
            target = "≤ 0.1 s, ≤ 100 MiB" if n == 10000 else ""
            rows.append((f"plan {n:,} instances (`ablate plan`, empty cache)", f"{t:.3f} s", target, f"{rss / 1024:.0f} MiB peak RSS{other}"))
            t_first, _ = timed([BIN, "--cache", cache, "--results", results, "run", f, "--jobs", "2", "--json"], work)
            # The first rerun records what it verified (v1/verified/); the next ones are timed.
            timed([BIN, "--cache", cache, "--results", results, "run", f, "--json"], work)
            t, rss, other = beside(compare, label, lambda b, suffix: [b, "--cache", cache, "--results", results + suffix, "run", f, "--json"], warm=True)
            target = "≤ 0.1 s (issue 21)" if n == 10000 else ""
            rows.append((f"no-op rerun, {n:,} instances, all cached (`ablate run`)", f"{t:.3f} s", target,
                         f"first run {t_first:.1f} s ({t_first / n * 1000:.2f} ms/instance at --jobs 2){other}"))
        print("plan, 10,000 values as an axis plus one include entry each ...", file=sys.stderr)
        f = os.path.join(work, "include10000.yaml")
        include_sweep(f, 10000)
        t, rss, other = beside(compare, label, lambda b, _: [b, "--cache", os.path.join(work, "empty"), "plan", f, "--format", "json"])
        rows.append(("plan 10,000 instances as a `matrix` axis + one `include` entry per value", f"{t:.3f} s",
                     "near the plain axis", f"the same sweep as a plain axis: {plain[10000]:.3f} s; {rss / 1024:.0f} MiB peak RSS{other}"))

        print("cmd overhead, 1000 instances ...", file=sys.stderr)
        f = os.path.join(work, "cmd1000.yaml")
        cmd_sweep(f, 1000)
        walls = []
        for i in range(3):
            cache = os.path.join(work, f"cmdcache{i}")
            walls.append(timed([BIN, "--cache", cache, "--results", os.path.join(work, "cmdres"), "run", f, "--jobs", "2", "--json"], work)[0])
        wall = statistics.median(walls)
        t0 = time.perf_counter()
        for _ in range(1000):
            subprocess.run(["sh", "-c", "true"], check=True)
        spawn = (time.perf_counter() - t0) / 1000
        per_slot = 2 * wall / 1000
        rows.append(("1,000 `cmd` instances of `true`, --jobs 2", f"{wall:.2f} s", "≤ 5 ms orchestration per instance",
                     f"{per_slot * 1000:.2f} ms per instance per slot, of which `sh -c true` itself {spawn * 1000:.2f} ms "
                     f"→ orchestration ≈ {(per_slot - spawn) * 1000:.2f} ms"))
        rows.extend(torch_cmd_threads(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def training(compare_dir=None):
    rows = []
    print("training steps/s ...", file=sys.stderr)
    ours, theirs = {}, {}
    flow_bench = lambda exe, weights, threads: json.loads(subprocess.run(
        [exe, "--weights", weights, "--threads", str(threads)],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])["steps_per_s"]
    for threads in (1, 2):
        for weights in ("shared", "unshared"):
            ours[(weights, threads)] = flow_bench(TRAIN_BENCH, weights, threads)
            if compare_dir:  # alternated, so both see the same machine
                theirs[(weights, threads)] = flow_bench(os.path.join(compare_dir, "train_flow_bench"), weights, threads)
    torch_rates = {}
    python = os.environ.get("ABLATE_BENCH_PYTHON", "python3")
    probe = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    torch_version = probe.stdout.strip() if probe.returncode == 0 else None
    if torch_version:
        out = subprocess.run([python, os.path.join(ROOT, "scripts", "bench_torch.py"), "2"],
                             check=True, capture_output=True, text=True).stdout
        for line in out.strip().splitlines():
            d = json.loads(line)
            torch_rates[d["weights"]] = d["steps_per_s"]
    for weights in ("shared", "unshared"):
        note = f"1 thread: {ours[(weights, 1)]:.0f} steps/s"
        if weights in torch_rates:
            note += f"; PyTorch {torch_version} (2 threads): {torch_rates[weights]:.0f} steps/s → {ours[(weights, 2)] / torch_rates[weights]:.1f}×"
        if theirs:
            note += (f"; the other build: {theirs[(weights, 2)]:.0f} (2 threads), {theirs[(weights, 1)]:.0f} (1 thread)"
                     f" → this one {ours[(weights, 2)] / theirs[(weights, 2)]:.2f}×, {ours[(weights, 1)] / theirs[(weights, 1)]:.2f}×")
        rows.append((f"train.flow steps/s, {weights} weights, batch 256 (2 threads)", f"{ours[(weights, 2)]:.0f}", "≥ 3× PyTorch", note))

    print("train.lm tokens/s ...", file=sys.stderr)
    lm_ours, lm_torch, lm_theirs = {}, {}, {}
    for _ in range(2):  # alternate, so both see the same machine; keep each one's best window
        for exe, best in [(LM_BENCH, lm_ours)] + ([(os.path.join(compare_dir, "lm_bench"), lm_theirs)] if compare_dir else []):
            out = subprocess.run([exe, "--threads", "2", "--seconds", "10", "--arch", "both"],
                                 check=True, capture_output=True, text=True).stdout
            for line in out.strip().splitlines():
                d = json.loads(line)
                best[d["arch"]] = max(best.get(d["arch"], 0.0), d["tokens_per_s"])
        if torch_version:
            out = subprocess.run([python, os.path.join(ROOT, "scripts", "bench_torch_lm.py"), "2", "10", "both"],
                                 check=True, capture_output=True, text=True).stdout
            for line in out.strip().splitlines():
                d = json.loads(line)
                lm_torch[d["arch"]] = max(lm_torch.get(d["arch"], 0.0), d["tokens_per_s"])
    for arch in ("decoder", "encdec"):
        note = "the better of two 10 s windows each"
        if arch in lm_torch:
            note = (f"PyTorch {torch_version} (2 threads): {lm_torch[arch] / 1000:.1f}k tokens/s → "
                    f"{lm_ours[arch] / lm_torch[arch]:.2f}×; " + note)
        if arch in lm_theirs:
            note += f"; the other build: {lm_theirs[arch] / 1000:.1f}k → this one {lm_ours[arch] / lm_theirs[arch]:.2f}×"
        target = "≥ PyTorch (performance.md: 23.2k)" if arch == "decoder" else "≥ PyTorch"
        rows.append((f"train.lm tokens/s, {arch}, d_model 128, 2 layers, seq 128, batch 32 (2 threads)",
                     f"{lm_ours[arch] / 1000:.1f}k", target, note))
    return rows, python, torch_version

FLOW_SWEEP = dict(lrs=[0.01, 0.02, 0.03, 0.05], seeds=list(range(8)), epochs=300)
LM_SWEEP = dict(lrs=[0.001, 0.002, 0.003, 0.005], seeds=list(range(4)), steps=300)


def sweep_pipeline(path, name, fuse, kind):
    """A sweep at the paper pipelines' size, as one stage with `fuse: auto` or `fuse: off`: 4 lr
    × 8 seeds of the flow (rousseau2020.yaml's model: dim 2, hidden 32, 16 shared Euler steps,
    batch 100, 1,000 points, 300 epochs), or 4 lr × 4 seeds of the LM (ablation.yaml's: d_model
    64, 4 heads, d_ff 256, 2 layers, seq 64, batch 16, a decoder on the clm objective)."""
    if kind == "flow":
        sw = FLOW_SWEEP
        stages = (f"  data:\n    op: data.toy2d\n    params: {{ kind: spirals, n_train: 1000, n_test: 1000, noise: 0.05 }}\n"
                  f"  train:\n    op: train.flow\n    needs: [data]\n    fuse: {fuse}\n"
                  f"    matrix: {{ lr: {sw['lrs']}, seed: {sw['seeds']} }}\n"
                  f"    params: {{ dim: 2, hidden: 32, steps: 16, weights: shared, epochs: {sw['epochs']}, batch: 100 }}\n")
    else:
        sw = LM_SWEEP
        stages = ("  corpus:\n    op: data.text\n    params: { source: synthetic, docs: 2000 }\n"
                  f"  train:\n    op: train.lm\n    needs: [corpus]\n    fuse: {fuse}\n"
                  f"    matrix: {{ lr: {sw['lrs']}, seed: {sw['seeds']} }}\n"
                  f"    params: {{ objective: clm, arch: decoder, d_model: 64, heads: 4, d_ff: 256, layers: 2, "
                  f"seq_len: 64, batch: 16, steps: {sw['steps']}, warmup: 30 }}\n")
    with open(path, "w") as f:
        f.write(f"name: {name}\nstages:\n{stages}")


def sweeps(compare_bin=None):
    """Fused vs `fuse: off` on the two sweeps, from an empty cache each time, at --jobs 2, the two
    alternated; and PyTorch's fused forms of the flow sweep (scripts/bench_torch_fused.py)."""
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for kind, members, steps_of in (("flow", 32, lambda: FLOW_SWEEP["epochs"] * 10),
                                        ("lm", 16, lambda: LM_SWEEP["steps"])):
            print(f"{kind} sweep, fused and not ...", file=sys.stderr)
            # `auto` fuses the LMs only on a GPU: on the CPU, `on` measures what fusing them does.
            fused_mode = "auto" if kind == "flow" else "on"
            walls = {fused_mode: [], "off": []}
            for i in range(2):
                for fuse in ("off", fused_mode):
                    f = os.path.join(work, f"{kind}_{fuse}.yaml")
                    sweep_pipeline(f, f"{kind}_sweep_{fuse}", fuse, kind)
                    cache = os.path.join(work, f"cache_{kind}_{fuse}{i}")
                    walls[fuse].append(timed([BIN, "--cache", cache, "--results", os.path.join(work, "res"),
                                              "run", f, "--jobs", "2", "--json"], work)[0])
                    shutil.rmtree(cache, ignore_errors=True)
            fused, off = statistics.median(walls[fused_mode]), statistics.median(walls["off"])
            model_steps = members * steps_of()
            what = ("32-member train.flow sweep (4 lr × 8 seeds; dim 2, hidden 32, 16 shared steps, batch 100, 300 epochs)"
                    if kind == "flow" else
                    "16-member train.lm sweep (4 lr × 4 seeds; d_model 64, 2 layers, seq 64, batch 16, 300 steps)")
            rows.append((f"sweep wall time, {what}, --jobs 2", f"{fused:.1f} s `fuse: {fused_mode}`",
                         "≥ 10× `fuse: off`" if kind == "flow" else "faster than `fuse: off` (else `auto` leaves it off)",
                         f"`fuse: off`: {off:.1f} s → {off / fused:.1f}×; {model_steps / fused:,.0f} model-steps/s fused, "
                         f"{model_steps / off:,.0f} unfused; medians of 2, alternated, empty cache each"))
    python = os.environ.get("ABLATE_BENCH_PYTHON", "python3")
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
        print("PyTorch fused flows ...", file=sys.stderr)
        out = subprocess.run([python, os.path.join(ROOT, "scripts", "bench_torch_fused.py"), "2", "32", "6"],
                             check=True, capture_output=True, text=True).stdout
        torch_rates = {d["way"]: d["model_steps_per_s"] for d in map(json.loads, out.strip().splitlines())}
        ours = json.loads(subprocess.run([FUSED_FLOW_BENCH, "--members", "32", "--threads", "2"],
                                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows.append(("sweep model-steps/s, the flow sweep's 32 models, training only (2 threads)",
                     f"{ours['fused_model_steps_per_s']:,.0f} fused", "≥ PyTorch's fused forms",
                     f"ablate one by one: {ours['alone_model_steps_per_s']:,.0f}; PyTorch: loop {torch_rates['loop']:,.0f}, "
                     f"torch.func vmap {torch_rates['vmap']:,.0f}, baddbmm by hand (HFTA) {torch_rates['bmm']:,.0f} "
                     f"→ ablate fused {ours['fused_model_steps_per_s'] / max(torch_rates.values()):.1f}× PyTorch's best"))
    return rows


PARTS = ("orchestration", "training", "sweeps")


def part_of(measure):
    """Which part of the benchmarks a table row belongs to, by its measure's name."""
    if measure.startswith(("train.flow", "train.lm")):
        return "training"
    if measure.startswith("sweep"):
        return "sweeps"
    return "orchestration"


def kept_rows(parts):
    """The table rows of BENCHMARKS.md that belong to `parts` (see `part_of`), and
    the text above the table, less what an earlier `--only` run added to it."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    if not os.path.exists(path):
        return [], []
    lines = open(path).read().splitlines()
    table = next((i for i, l in enumerate(lines) if l.startswith("| measure")), len(lines))
    preamble = [l for l in lines[1:table] if l and not l.startswith(("Rows of the ", "`/"))]
    rows = []
    for l in lines[table + 2:]:
        cells = tuple(c.strip() for c in l.strip().strip("|").split(" | "))
        if l.startswith("| ") and len(cells) == 4:
            if part_of(cells[0]) in parts:
                rows.append(cells)
    return rows, preamble


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=PARTS)
    ap.add_argument("--compare", metavar="BIN", help="another ablate binary to time beside this one")
    ap.add_argument("--compare-examples", metavar="DIR", help="another build's train_flow_bench and lm_bench")
    args = ap.parse_args()
    run = [args.only] if args.only else list(PARTS)
    print("building release binaries ...", file=sys.stderr)
    if "orchestration" in run or "sweeps" in run:
        sh("cargo", "build", "--release", "--quiet", "-p", "ablate-cli")
    if "training" in run:
        sh("cargo", "build", "--release", "--quiet", "-p", "ablate-models", "--example", "train_flow_bench")
        sh("cargo", "build", "--release", "--quiet", "-p", "ablate-models", "--example", "lm_bench")
    if "sweeps" in run:
        sh("cargo", "build", "--release", "--quiet", "-p", "ablate-models", "--example", "fused_flow_bench")
    python, torch_version = os.environ.get("ABLATE_BENCH_PYTHON", "python3"), None
    # The parts not run keep their rows from BENCHMARKS.md, in the table's order.
    kept, kept_header = kept_rows([p for p in PARTS if p not in run]) if args.only else ([], [])
    rows = []
    for part in PARTS:
        if part not in run:
            rows += [r for r in kept if part_of(r[0]) == part]
        elif part == "orchestration":
            rows += orchestration(args.compare and os.path.abspath(args.compare))
        elif part == "training":
            trained, python, torch_version = training(args.compare_examples and os.path.abspath(args.compare_examples))
            rows += trained
        else:
            rows += sweeps()

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    compared = [f"`{os.path.abspath(args.compare)}` was timed beside it, alternately, on the same measures."] if args.compare else []
    if args.compare_examples:
        compared.append(f"The training benchmarks of `{os.path.abspath(args.compare_examples)}` ran beside this build's, alternately.")
    if args.only:
        # The other part's rows are an earlier run's, described by the text kept below.
        other = " and ".join(p for p in PARTS if p != args.only)
        preamble = [f"Rows of the {args.only} part: `scripts/bench.py --only {args.only}` on {datetime.date.today()}, "
                    f"revision `{rev or 'unknown'}`, {os.cpu_count()} cores ({cpu}). The {other} rows are from the run below.",
                    *compared, *kept_header]
    else:
        preamble = [
            f"Measured by `just bench` (scripts/bench.py) on {datetime.date.today()}, revision `{rev or 'unknown'}`,",
            f"{os.cpu_count()} cores ({cpu}). Medians of {REPEATS} runs (3 for `cmd`); shared, noisy machine.",
            *compared,
            f"PyTorch ran in `{python}`" + (f" (torch {torch_version}, on the CPU)." if torch_version else " (not importable)."),
            "Targets are issue 2's and issue 4's. train.flow: 2→32 lift, 10 residual steps of a hidden-64 tanh MLP,",
            "batch 256, Adam. train.lm: byte vocabulary (362), d_model 128, 2 layers, 4 heads, d_ff 512, AdamW; the",
            "decoder reads 128 tokens a row, the encoder-decoder 64 + 64.",
        ]
    lines = [
        "# Benchmarks",
        "",
        *preamble,
        "",
        "| measure | result | target | detail |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {t} | {c} |" for a, b, t, c in rows]
    if not torch_version and not args.only:
        lines += ["", "PyTorch was not importable by `$ABLATE_BENCH_PYTHON`, so no side-by-side figure: see ../shared/notes/performance.md."]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
