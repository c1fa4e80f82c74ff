#!/usr/bin/env python3
"""Reliability campaign against the release binary: kill -9, concurrent runs, parser fuzz.

    python3 scripts/chaos.py [--quick] [--seed N] [--kills N] [--fuzz N] [--concurrent N]

Everything happens in a fresh temporary directory (never the repository's cache/ or results/),
with a private copy of the binary, so a rebuild during the campaign changes nothing. Prints one
line per trial, then a Markdown table `| check | tried | held | notes |`, the failures in detail,
and exits 1 when anything did not hold (2 when the campaign could not start). The directory is
kept when something failed (or with --keep): its path is printed, and every fuzz input that did
not hold is under `fuzz/failures/`.

Parts (each can be picked with --parts):

self-test   Plants a fault of each kind the campaign looks for in scratch copies (a tampered
            manifest metric, a tampered `started_at`, a same-size same-mtime corrupted output, a
            stray `.tmp`, a lingering marker process, a deleted entry) and checks that the checks
            fire; a check that never fires would report "held" for nothing.
kill        A small pipeline (`cmd` stages sleeping 0.05-0.5 s and writing metrics.json, `echo`
            with sleep_ms, data.toy2d -> train.flow -> eval.flow -> report.table, a `cmd` reading
            the model), a new generation (`tag`) per round so that every round has work to do.
            Each round starts `ablate run`, SIGKILLs it after a random delay and checks:
              (a) no entry that `cache verify` (or this script re-hashing the outputs) finds
                  invalid is one that `run` would trust (`plan` says `cached`);
              (b) no process of the killed run (found by a marker in its command line or
                  environment) is alive after a grace period: 1 s after killing the whole process
                  tree; after killing ablate alone (its programs are then stopped by ablate's
                  watchdog, #21), 2.5 s;
              (c) a following `ablate run` exits 0, every instance cached or computed, and `plan`
                  then says every instance is cached (and its entry exists and verifies);
              (d) every instance in results/<name>/runs.parquet agrees with its manifest: each
                  final metric (no step) equal at the table's 4 significant digits, no metric
                  missing or extra, `started_at` equal to the manifest's `started_at_us`; every
                  instance of the plan with metrics has rows;
              (e) no `*.tmp` file is left in the results directory.
            A stale row or stray file left by one round counts once, in that round; later rounds
            only note it. Kill delays are seeded, but whether a run ends before its kill depends
            on the machine, so two campaigns with one seed may differ a little.
            Kill modes: the whole process tree (SIGKILL to ablate's process group and to every
            process of its session: `cmd` children run in process groups of their own, so killing
            the group alone would not reach them), ablate alone (its children are orphaned), and
            `--force <stage>` runs killed mid-run (either mode) followed by a normal run.
concurrent  N `ablate run` processes started at once on one cache and one results directory, on
            20 `cmd` instances that each append their marker to a log outside the cache. Held:
            every run exits 0, every marker is in the log exactly once, and a following run
            reports everything cached. A second row checks that runs.parquet then holds exactly
            one row per instance.
fuzz        Mutated copies of pipelines/*.yaml and crates/ablate-cli/tests/fixtures/invalid/*.yaml
            (byte flips, line deletion/duplication/swaps, indentation, YAML tokens, odd values,
            huge numbers and strings, deep nesting, NULs, invalid UTF-8, alias bombs, merges,
            splices, truncation, stages with thousands of errors) through
            `ablate plan FILE --cache <empty>` (10 s each, 2 workers). Held: exit code 0, 1
            or 2 (no panic = 101, no signal, no timeout), no "panicked" on stderr, stderr at most
            64 KiB + 2 x the input's size. A second row checks that `plan` wrote no cache entry.

Python standard library only; Parquet is read through `ablate table --markdown`.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import hashlib
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIPELINE_NAME = "chaos_kill"
CONC_NAME = "chaos_conc"
FUZZ_TIMEOUT_S = 10
RUN_TIMEOUT_S = 300
MAX_CMD_SLEEP_S = 0.5
LIVE: set[subprocess.Popen] = set()  # ablate processes this script started and has not reaped


def log(msg: str = "") -> None:
    print(msg, flush=True)


def why_failed(stderr: bytes) -> str:
    """The gist of a failed run's stderr: its panic (where, what, the first ablate frame of the
    backtrace), else its last line."""
    text = stderr.decode(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "panicked at" in ln:
            where = ln.split("panicked at", 1)[1].strip().rstrip(":")
            where = where.rsplit("/", 1)[-1]
            msg = lines[i + 1] if i + 1 < len(lines) else ""
            frame = next((re.sub(r"^\d+:\s*", "", f) for f in lines[i + 2 :] if re.match(r"^\d+:\s*ablate", f)), "")
            return f"panic at {where}: {msg}" + (f" (in {frame})" if frame else "")
    return (lines[-1] if lines else "(no stderr)")[:220]


# --------------------------------------------------------------------------------------------
# ablate invocations


class Ablate:
    def __init__(self, binary: Path, marker: str):
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ABLATE_")}
        self.env["CHAOS_MARKER"] = marker
        self.env["NO_COLOR"] = "1"

    def run(self, args, cwd, timeout=RUN_TIMEOUT_S, stdout=subprocess.PIPE, exe=None) -> subprocess.CompletedProcess:
        p = subprocess.Popen(
            [*(exe or [str(self.binary)]), *map(str, args)],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        LIVE.add(p)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(p.pid)
            out, err = p.communicate()
            LIVE.discard(p)
            return subprocess.CompletedProcess(p.args, "timeout", out or b"", err or b"")
        LIVE.discard(p)
        return subprocess.CompletedProcess(p.args, p.returncode, out or b"", err or b"")

    def start(self, args, cwd, logfile: Path) -> subprocess.Popen:
        f = open(logfile, "wb")
        p = subprocess.Popen(
            [str(self.binary), *map(str, args)],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and process group: pgid = sid = pid
        )
        f.close()
        LIVE.add(p)
        return p

    def plan(self, pipeline, cache, cwd, extra=()) -> dict[str, dict]:
        """Instance key -> its plan entry (`status` is `cached` when `run` would trust it)."""
        r = self.run(["plan", pipeline, "--cache", cache, "--format", "json", *extra], cwd, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"plan failed ({r.returncode}): {r.stderr.decode(errors='replace')[-500:]}")
        return {i["key"]: i for i in json.loads(r.stdout)["instances"]}

    def verify(self, cache, cwd) -> tuple[dict[str, str], str]:
        """Short key -> why, for every entry `cache verify` reports invalid; and its last line."""
        r = self.run(["cache", "verify", "--cache", cache], cwd, timeout=300)
        text = r.stdout.decode(errors="replace")
        bad = {}
        for line in text.splitlines():
            m = re.match(r"^(?:invalid|removed) ([0-9a-f]{6,64}): (.*)$", line)
            if m:
                bad[m.group(1)] = m.group(2)
        if r.returncode not in (0, 1) or "entries verified" not in text:
            bad["?"] = f"cache verify exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}"
        tail = text.strip().splitlines()[-1] if text.strip() else ""
        return bad, tail

    def table(self, parquet, cwd) -> list[dict[str, str]]:
        """The rows of a Parquet table as `ablate table --json` gives them (values as stored:
        `started_at` in microseconds), each cell as text, an empty cell as ``."""
        r = self.run(["table", "--json", parquet], cwd, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"ablate table failed ({r.returncode}): {r.stderr.decode(errors='replace')[-300:]}")

        def text(v) -> str:
            if v is None:
                return ""
            if isinstance(v, bool):
                return str(v).lower()
            return v if isinstance(v, str) else repr(v)

        return [{k: text(v) for k, v in json.loads(line).items()}
                for line in r.stdout.decode().splitlines() if line.strip()]


def format_float(x: float) -> str:
    """ablate_results::format_float: 4 significant digits, trailing zeros dropped."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"

    def trim(s: str) -> str:
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return "0" if s == "-0" else s

    mag = math.floor(math.log10(abs(x)))
    if not -4 <= mag < 6:
        mant, exp = f"{x:.3e}".split("e")
        return f"{trim(mant)}e{int(exp)}"
    return trim(f"{x:.{max(3 - mag, 0)}f}")


def same_value(cell: str, value: float) -> bool:
    if cell == format_float(value):
        return True
    try:  # a last-digit rounding difference between two printers is not a stale row
        c = float(cell)
    except ValueError:
        return False
    return math.isfinite(c) and math.isfinite(value) and abs(c - value) <= 6e-4 * max(abs(value), 1e-300)


# --------------------------------------------------------------------------------------------
# processes


def proc_stat(pid: int):
    """(state, pgid, sid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2 :].split()
    return rest[0], int(rest[2]), int(rest[3])


def all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def session_members(sid: int) -> list[int]:
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[2] == sid and st[0] != "Z":
            out.append(pid)
    return out


def marker_procs(marker: str) -> list[tuple[int, str]]:
    """Live (not zombie) processes whose command line or environment holds the marker."""
    needle = marker.encode()
    me = os.getpid()
    found = []
    for pid in all_pids():
        if pid == me:
            continue
        st = proc_stat(pid)
        if not st or st[0] == "Z":
            continue
        hit = False
        cmdline = b""
        for what in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if what == "cmdline":
                cmdline = data
            if needle in data:
                hit = True
        if hit:
            found.append((pid, cmdline.replace(b"\0", b" ").decode(errors="replace").strip()[:120]))
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ablate's process group, then every process left in its session (the `cmd`
    children run in process groups of their own), until none is left."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for _ in range(50):
        members = session_members(pid)
        if not members:
            return
        for q in members:
            try:
                os.kill(q, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def wait_gone(marker: str, grace: float) -> tuple[list[tuple[int, str]], int, float]:
    """Waits up to `grace` s for every marker process to exit: (still alive, seen at first, s)."""
    t0 = time.monotonic()
    first = marker_procs(marker)
    left = first
    while left and time.monotonic() - t0 < grace:
        time.sleep(0.05)
        left = marker_procs(marker)
    return left, len(first), time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# the cache, seen from outside


def entry_dirs(cache: Path):
    v1 = cache / "v1"
    if not v1.is_dir():
        return
    for d in sorted(v1.iterdir()):
        if len(d.name) == 2 and all(c in "0123456789abcdef" for c in d.name) and d.is_dir():
            for e in sorted(d.iterdir()):
                if len(e.name) == 64:
                    yield e


def manifest(cache: Path, key: str):
    try:
        return json.loads((cache / "v1" / key[:2] / key / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def own_verify(cache: Path) -> dict[str, str | None]:
    """Key -> why it is invalid (None when every output matches its manifest), re-hashed here."""
    out: dict[str, str | None] = {}
    for e in entry_dirs(cache):
        mf = e / "manifest.json"
        if not mf.exists():
            out[e.name] = "no manifest.json"
            continue
        try:
            m = json.loads(mf.read_text())
        except (OSError, ValueError) as err:
            out[e.name] = f"unreadable manifest ({err})"
            continue
        why = None
        if m.get("key") != e.name:
            why = f"manifest key {str(m.get('key'))[:8]} in directory {e.name[:8]}"
        for o in m.get("outputs", []):
            p = e / o["path"]
            try:
                data = p.read_bytes()
            except OSError:
                why = why or f"output {o['path']} missing"
                continue
            if len(data) != o["size"]:
                why = why or f"output {o['path']} has {len(data)} bytes, manifest {o['size']}"
            elif hashlib.sha256(data).hexdigest() != o["sha256"]:
                why = why or f"output {o['path']} sha256 differs"
        out[e.name] = why
    return out


def final_metrics(m: dict) -> dict[str, float]:
    return {x["name"]: float(x["value"]) for x in m.get("metrics", []) if x.get("step") is None}


def check_runs_vs_manifests(ab: Ablate, cache: Path, runs: Path, cwd: Path, plan: dict | None) -> list[str]:
    """(d): the rows of runs.parquet against the manifests they name. Returns problems, each
    starting with `value`, `started_at`, `missing`, `extra`, `duplicate` or `no manifest`."""
    if not runs.exists():
        return ["missing: no runs.parquet"] if plan else []
    rows = ab.table(runs, cwd)
    by_inst: dict[str, list[dict]] = collections.defaultdict(list)
    for r in rows:
        by_inst[r["instance"]].append(r)
    problems = []
    for key, rs in by_inst.items():
        label = f"{rs[0].get('stage')}[{rs[0].get('label')}] {key[:8]}"
        m = manifest(cache, key)
        if m is None:
            problems.append(f"no manifest: {label} has rows but no readable manifest")
            continue
        want = final_metrics(m)
        have: dict[str, list[str]] = collections.defaultdict(list)
        for r in rs:
            if r.get("step", "") == "":
                have[r["metric"]].append(r["value"])
        for name in sorted(set(want) | set(have)):
            if name not in have:
                problems.append(f"missing: {label} metric {name} (manifest {format_float(want[name])}) has no row")
            elif name not in want:
                problems.append(f"extra: {label} metric {name} = {have[name][0]} is not in the manifest")
            elif len(have[name]) > 1:
                problems.append(f"duplicate: {label} metric {name} has {len(have[name])} final rows")
            elif not same_value(have[name][0], want[name]):
                problems.append(
                    f"value: {label} {name} = {have[name][0]} in runs.parquet, "
                    f"{format_float(want[name])} in the manifest"
                )
        started = {r.get("started_at") for r in rs}
        if started != {str(m.get("started_at_us"))}:
            problems.append(
                f"started_at: {label} rows say {sorted(started)}, the manifest {m.get('started_at_us')} "
                "(the rows describe another computation)"
            )
    for key, inst in (plan or {}).items():
        m = manifest(cache, key)
        if m and final_metrics(m) and key not in by_inst:
            problems.append(f"missing: {inst['id']} {key[:8]} has metrics but no row in runs.parquet")
    return problems


def stray_tmp(results: Path) -> list[str]:
    return [str(p.relative_to(results)) for p in results.rglob("*") if p.name.endswith(".tmp")] if results.exists() else []


# --------------------------------------------------------------------------------------------
# results


class Row:
    def __init__(self, check: str):
        self.check = check
        self.tried = 0
        self.held = 0
        self.fails: list[str] = []  # one line per failed trial
        self.tags: collections.Counter = collections.Counter()
        self.info: list[str] = []
        self.all_tags: collections.Counter = collections.Counter()  # every failed invariant, not only the first

    def add(self, ok: bool, tag: str = "", detail: str = "") -> None:
        self.tried += 1
        if ok:
            self.held += 1
        else:
            self.tags[tag] += 1
            self.fails.append(detail)

    def notes(self) -> str:
        parts = []
        if self.tags:
            parts.append("failed: " + ", ".join(f"{t} ×{n}" for t, n in self.tags.most_common()))
            parts.append("first: " + self.fails[0][:160])
            if self.all_tags and self.all_tags != self.tags:
                parts.append("any position: " + ", ".join(f"{t} ×{n}" for t, n in self.all_tags.most_common()))
        parts += self.info
        return "; ".join(parts).replace("|", "\\|") or "—"


# --------------------------------------------------------------------------------------------
# part 0: the checks fire on planted faults


def self_test(ab: Ablate, root: Path, kill_ctx: dict, marker: str, rows: list[Row]) -> None:
    row = Row("checks fire on planted faults (self-test)")
    rows.append(row)
    work, cache, results, pipeline = kill_ctx["work"], kill_ctx["cache"], kill_ctx["results"], kill_ctx["pipeline"]
    runs = results / PIPELINE_NAME / "runs.parquet"
    scratch = root / "selftest"

    def fresh(name):
        d = scratch / name
        shutil.copytree(cache, d / "cache")
        shutil.copytree(results, d / "results")
        return d / "cache", d / "results"

    plan = ab.plan(pipeline, cache, work)
    baseline = check_runs_vs_manifests(ab, cache, runs, work, plan)
    row.add(not baseline, "baseline", f"the clean cache already fails (d): {baseline[:2]}")
    eval_key = next(k for k, i in plan.items() if i["stage"] == "eval")

    # (d) fires on a tampered final metric
    c, r = fresh("metric")
    mf = c / "v1" / eval_key[:2] / eval_key / "manifest.json"
    m = json.loads(mf.read_text())
    for x in m["metrics"]:
        if x["name"] == "test_acc":
            x["value"] = float(x["value"]) + 0.37
    mf.write_text(json.dumps(m))
    p = check_runs_vs_manifests(ab, c, r / PIPELINE_NAME / "runs.parquet", work, plan)
    row.add(any(s.startswith("value:") for s in p), "(d) value", f"a tampered test_acc went unnoticed: {p}")

    # (d) fires on a tampered started_at (stale rows with unchanged metric values)
    c, r = fresh("started")
    mf = c / "v1" / eval_key[:2] / eval_key / "manifest.json"
    m = json.loads(mf.read_text())
    m["started_at_us"] = int(m["started_at_us"]) + 1
    mf.write_text(json.dumps(m))
    p = check_runs_vs_manifests(ab, c, r / PIPELINE_NAME / "runs.parquet", work, plan)
    row.add(any(s.startswith("started_at:") for s in p), "(d) started_at", f"a tampered started_at went unnoticed: {p}")

    # (a) fires on a corrupted output that `run` would trust (same size, same mtime)
    c, r = fresh("torn")
    flow_key = next(k for k, i in plan.items() if i["stage"] == "flow")
    f = c / "v1" / flow_key[:2] / flow_key / "model.safetensors"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    fails, _ = check_cache_trust(ab, c, pipeline, work, set())
    row.add(any("trusted" in s for s in fails), "(a)", f"a corrupted, trusted entry went unnoticed: {fails}")

    # (a) does not fire on a torn entry that `run` would recompute (the designed recovery)
    c, r = fresh("torn2")
    f = c / "v1" / flow_key[:2] / flow_key / "model.safetensors"
    f.write_bytes(f.read_bytes()[:10])
    fails, notes = check_cache_trust(ab, c, pipeline, work, set())
    row.add(not fails and any("not trusted" in n for n in notes), "(a) recovery", f"a truncated entry: {fails} {notes}")

    # (c) fires when an instance is not cached after the run
    c, r = fresh("missing")
    shutil.rmtree(c / "v1" / eval_key[:2] / eval_key)
    p = check_all_cached(ab, c, pipeline, work)
    row.add(bool(p), "(c)", "a missing entry went unnoticed")

    # (e) fires on a stray temp file
    c, r = fresh("tmp")
    (r / PIPELINE_NAME / ".runs.parquet.1.0.tmp").write_bytes(b"x")
    row.add(bool(stray_tmp(r)), "(e)", "a stray .tmp went unnoticed")

    # (b) fires on a process of the run that outlives the grace period
    env = dict(ab.env)
    p = subprocess.Popen(["sh", "-c", f"sleep 30; : {marker}"], env=env, start_new_session=True)
    LIVE.add(p)
    left, _, _ = wait_gone(marker, 0.3)
    row.add(any(pid == p.pid for pid, _ in left), "(b)", "a lingering marker process went unnoticed")
    kill_tree(p.pid)
    p.wait()
    LIVE.discard(p)
    shutil.rmtree(scratch, ignore_errors=True)

    # the fuzz verdict: a panic, a signal, a timeout, a flood on stderr; and a clean error holds
    r = ab.run([], root, timeout=0.5, exe=["sleep", "5"])
    row.add(bool(fuzz_verdict(r.returncode, r.stderr, 10)), "fuzz timeout", f"a hung process was not flagged ({r.returncode})")
    r = ab.run([], root, exe=["sh", "-c", "kill -SEGV $$"])
    row.add(bool(fuzz_verdict(r.returncode, r.stderr, 10)), "fuzz signal", f"a segfault was not flagged ({r.returncode})")
    r = ab.run([], root, exe=["sh", "-c", "echo \"thread 'main' panicked at src/x.rs:1:1\" >&2; exit 101"])
    row.add(len(fuzz_verdict(r.returncode, r.stderr, 10)) == 2, "fuzz panic", f"a panic was not flagged ({r.returncode})")
    row.add(bool(fuzz_verdict(2, b"e" * (64 * 1024 + 21), 10)), "fuzz stderr", "a flood on stderr was not flagged")
    row.add(not fuzz_verdict(2, b"error: x" * 100, 10), "fuzz false alarm", "a clean input error was flagged")
    log(f"self-test: {row.held}/{row.tried} planted faults detected")


# --------------------------------------------------------------------------------------------
# part 1: kill -9


def kill_pipeline(gen: int, rng: random.Random, marker: str) -> str:
    n_shell, n_tick = 6, 4
    shell_inc = ", ".join(f"{{ i: {i}, s: {rng.uniform(0.05, MAX_CMD_SLEEP_S):.2f} }}" for i in range(n_shell))
    tick_inc = ", ".join(f"{{ value: {v}, sleep_ms: {rng.randint(50, 500)} }}" for v in range(1, n_tick + 1))
    probe_s = rng.uniform(0.05, MAX_CMD_SLEEP_S)
    return f"""# written by scripts/chaos.py (kill -9 campaign), generation {gen}
name: {PIPELINE_NAME}
vars: {{ gen: {gen} }}
stages:
  shell:
    op: cmd
    matrix: {{ i: [{", ".join(str(i) for i in range(n_shell))}] }}
    include: [{shell_inc}]
    params:
      tag: "g${{vars.gen}}"
      run: |
        : {marker}
        sleep {{param.s}}
        r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
        printf '{{"i": %s, "r": %s}}\\n' {{param.i}} "$r" > {{out}}/metrics.json
  tick:
    op: echo
    matrix: {{ value: [{", ".join(str(v) for v in range(1, n_tick + 1))}] }}
    include: [{tick_inc}]
    params: {{ tag: "g${{vars.gen}}" }}
  data:
    op: data.toy2d
    params: {{ kind: moons, n_train: 300, n_test: 300 }}
  flow:
    op: train.flow
    needs: [data]
    matrix: {{ steps: [1, 2] }}
    params: {{ epochs: 6, hidden: 8, batch: 64, tag: "g${{vars.gen}}" }}
  eval:
    op: eval.flow
    needs: [flow]
    params: {{ grid: 5 }}
  probe:
    op: cmd
    needs: [flow]
    params:
      s: {probe_s:.2f}
      run: |
        : {marker}
        sleep {{param.s}}
        n=$(wc -c < {{in.flow}}/model.safetensors)
        printf '{{"model_bytes": %s}}\\n' "$n" > {{out}}/metrics.json
  table:
    op: report.table
    needs: [eval]
    params: {{ rows: [steps], cols: [], metric: test_acc, aggregate: mean }}
"""


def check_cache_trust(ab: Ablate, cache: Path, pipeline: Path, cwd: Path, known: set) -> tuple[list[str], list[str]]:
    """(a): entries found invalid (by `cache verify` or by re-hashing here) that `run` would
    trust. Returns (failures, notes); `known` holds keys already reported by earlier rounds."""
    bad_v, _ = ab.verify(cache, cwd)
    own = own_verify(cache)
    fails, notes = [], []
    if "?" in bad_v:
        fails.append(bad_v.pop("?"))
    bad: dict[str, str] = {}
    for short, why in bad_v.items():
        full = [k for k in own if k.startswith(short)] or [short]
        for k in full:
            bad[k] = f"verify: {why}"
    for k, why in own.items():
        if why:
            if k not in bad:
                fails.append(f"cache verify missed an invalid entry {k[:8]} ({why})")
            bad.setdefault(k, why)
    new = {k: v for k, v in bad.items() if k not in known}
    known.update(bad)
    if not new:
        return fails, notes
    plan = ab.plan(pipeline, cache, cwd)
    for k, why in new.items():
        status = plan.get(k, {}).get("status")
        if status == "cached":
            fails.append(f"entry {k[:8]} is invalid ({why}) and trusted: plan says cached")
        elif k in plan:
            notes.append(f"entry {k[:8]} invalid but not trusted (plan: {plan[k].get('reason')}): {why}")
        else:
            notes.append(f"entry {k[:8]} invalid, outside this plan: {why}")
    return fails, notes


def check_all_cached(ab: Ablate, cache: Path, pipeline: Path, cwd: Path) -> list[str]:
    plan = ab.plan(pipeline, cache, cwd)
    problems = []
    for k, i in plan.items():
        if i["status"] != "cached":
            problems.append(f"{i['id']} {k[:8]} not cached after the run ({i['status']}: {i.get('reason')})")
        elif not (cache / "v1" / k[:2] / k / "manifest.json").exists():
            problems.append(f"{i['id']} {k[:8]} cached without a manifest")
    return problems


def kill_part(ab: Ablate, root: Path, args, marker: str, rows: list[Row], do_selftest: bool) -> None:
    rng = random.Random(f"{args.seed}-kill")
    work = root / "kill"
    cache, results, pipeline = work / "cache", work / "results", work / "pipeline.yaml"
    rounds_dir = work / "rounds"
    rounds_dir.mkdir(parents=True)
    runs = results / PIPELINE_NAME / "runs.parquet"
    gen = 0
    pipeline.write_text(kill_pipeline(gen, rng, marker))
    base = ["--cache", cache, "--results", results]

    # a complete run first: the duration the kill delays are drawn from, and something to force
    t0 = time.monotonic()
    r = ab.run(["run", pipeline, *base, "--json"], work)
    t_full = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"the campaign's pipeline does not run ({r.returncode}):\n{r.stderr.decode(errors='replace')[-2000:]}")
    log(f"kill: warm-up run of {len(ab.plan(pipeline, cache, work))} instances took {t_full:.2f}s")
    if do_selftest:
        self_test(ab, root, {"work": work, "cache": cache, "results": results, "pipeline": pipeline}, marker, rows)

    row_tree = Row("kill -9 mid-run: whole process tree")
    row_alone = Row("kill -9 mid-run: ablate alone (children orphaned)")
    row_force = Row("kill -9 during `run --force STAGE`, then a normal run")
    rows += [row_tree, row_alone, row_force]

    n_force = 0 if args.kills < 2 else max(1, round(args.kills / 5))
    n_rest = args.kills - n_force
    plan_modes = [("tree", None)] * ((n_rest + 1) // 2) + [("alone", None)] * (n_rest // 2)
    for j in range(n_force):
        plan_modes.append(("tree" if j % 2 == 0 else "alone", "shell" if j % 2 == 0 else "flow"))
    rng.shuffle(plan_modes)
    known_bad: set = set()
    known_d: set = set()
    known_tmp: set = set()
    orphans_seen = 0
    max_tmp = [0]

    for k, (mode, force) in enumerate(plan_modes, 1):
        rd = rounds_dir / f"{k:03d}"
        rd.mkdir()
        failures: list[tuple[str, str]] = []
        notes: list[str] = []
        # start and kill: retried (with a new generation) if the run ended before the kill
        for attempt in range(6):
            if force is None:
                gen += 1
                pipeline.write_text(kill_pipeline(gen, rng, marker))
            run_args = ["run", pipeline, *base] + (["--force", force] if force else [])
            hi = t_full * (0.7 if force else 1.0) / (attempt + 1)
            delay = rng.uniform(0.03, max(hi, 0.06))
            p = ab.start(run_args, work, rd / f"killed-run-{attempt}.log")
            try:
                p.wait(timeout=delay)
                LIVE.discard(p)
                continue  # finished first: no kill
            except subprocess.TimeoutExpired:
                pass
            if mode == "tree":
                kill_tree(p.pid)
            else:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
            LIVE.discard(p)
            break
        else:
            failures.append(("setup", "the run always finished before the kill"))
            delay = float("nan")

        # (b) processes of the killed run
        grace = 1.0 if mode == "tree" else MAX_CMD_SLEEP_S + 2.0
        left, first, waited = wait_gone(marker, grace)
        orphans_seen += first if mode == "alone" else 0
        if first:
            notes.append(f"{first} marker process(es) alive after the kill, gone in {waited:.2f}s" if not left else "")
        if left:
            failures.append(("(b) orphans", f"{len(left)} process(es) of the killed run alive {grace:.1f}s later: {left[0][1]}"))
            for pid, _ in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

        # (a) invalid entries that run would trust
        try:
            fa, na = check_cache_trust(ab, cache, pipeline, work, known_bad)
        except Exception as err:  # noqa: BLE001
            fa, na = [f"check failed: {err}"], []
        failures += [("(a) trusted invalid entry", s) for s in fa]
        notes += na

        # (c) a normal run completes
        r = ab.run(["run", pipeline, *base, "--json"], work)
        (rd / "final-run.jsonl").write_bytes(r.stdout)
        (rd / "final-run.stderr").write_bytes(r.stderr)
        summary = None
        for line in r.stdout.decode(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "summary":
                summary = ev
        plan = None
        if r.returncode != 0:
            failures.append(("(c) final run", f"final run exited {r.returncode}: {why_failed(r.stderr)}"))
        else:
            try:
                plan = ab.plan(pipeline, cache, work)
                pc = check_all_cached(ab, cache, pipeline, work)
                if not summary or summary.get("failed") or summary.get("skipped"):
                    pc.append(f"summary {summary}")
                elif summary["ran"] + summary["cached"] != len(plan):
                    pc.append(f"summary ran {summary['ran']} + cached {summary['cached']} != {len(plan)} instances")
                bad_after, _ = ab.verify(cache, work)
                for short in bad_after:
                    if any(key.startswith(short) for key in plan):
                        pc.append(f"entry {short} of this plan invalid after the run: {bad_after[short]}")
                failures += [("(c) not all cached", s) for s in pc]
            except Exception as err:  # noqa: BLE001
                failures.append(("(c) final run", f"check failed: {err}"))

        # (d) runs.parquet agrees with the manifests
        if plan is not None:
            try:
                pd = check_runs_vs_manifests(ab, cache, runs, work, plan)
            except Exception as err:  # noqa: BLE001
                pd = [f"unreadable: {err}"]
            # a stale row left by an earlier round stays stale: it counts once, in the round that
            # made it, and is only noted afterwards
            carried = 0
            for s in pd:
                kind = s.split(":", 1)[0]
                ident = s  # the same rows against the same manifest: the same message
                if ident in known_d:
                    carried += 1
                    continue
                known_d.add(ident)
                failures.append((f"(d) runs.parquet {kind}", s))
            if carried:
                notes.append(f"(d) {carried} problem(s) carried over from earlier rounds (still there after this run)")
            if pd and runs.exists():
                shutil.copy(runs, rd / "runs.parquet")

        # (e) stray temp files in the results
        tmp_left = []
        if r.returncode == 0:
            tmp_left = list((cache / "v1" / "tmp").iterdir()) if (cache / "v1" / "tmp").exists() else []
            max_tmp[0] = max(max_tmp[0], len(tmp_left))
            st = stray_tmp(results)
            new_st = [x for x in st if x not in known_tmp]
            known_tmp.update(st)
            if new_st:
                failures.append(("(e) stray .tmp", f"{len(new_st)} temp file(s) left in results: {new_st[0]}"))
            if len(st) > len(new_st):
                notes.append(f"(e) {len(st) - len(new_st)} stray temp file(s) from earlier rounds still there")

        what = f"{mode}{' --force ' + force if force else ''}"
        row = row_force if force else (row_tree if mode == "tree" else row_alone)
        if failures:
            tag, detail = failures[0]
            row.add(False, tag, f"round {k} ({what}, killed at {delay:.2f}s): {detail}")
            row.all_tags.update({t for t, _ in failures})
            (rd / "FAILED.txt").write_text("\n".join(f"{t}: {d}" for t, d in failures) + "\n")
        else:
            row.add(True)
        extra = f"  (cache v1/tmp: {len(tmp_left)} leftover dir(s) after the run)" if tmp_left else ""
        status = "held" if not failures else f"FAILED {failures[0][0]}: {failures[0][1][:150]}"
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        log(f"kill {k:3d}/{len(plan_modes)}  {what:<20} killed at {delay:5.2f}s  {status}{more}{extra}")
        for n in notes:
            if n:
                log(f"      note: {n}")
    row_alone.info.append(f"{orphans_seen} orphaned child process(es) seen, all stopped by the watchdog within 2.5 s" if orphans_seen and not row_alone.tags.get("(b) orphans") else "")
    row_alone.info = [i for i in row_alone.info if i]
    if max_tmp[0]:
        for row in (row_tree, row_alone, row_force):
            if row.tried:
                row.info.append(f"info: up to {max_tmp[0]} killed runs' temp dirs stay in cache/v1/tmp after a successful run (not trusted; `cache gc` removes them)")
                break


# --------------------------------------------------------------------------------------------
# part 2: concurrent runs


def conc_pipeline(logfile: Path, sleep_s: float, n: int) -> str:
    return f"""# written by scripts/chaos.py (concurrent runs)
name: {CONC_NAME}
stages:
  work:
    op: cmd
    matrix: {{ i: [{", ".join(str(i) for i in range(n))}] }}
    params:
      run: |
        echo "instance-"{{param.i}} >> {shlex.quote(str(logfile))}
        sleep {sleep_s:.2f}
        printf '{{"i": %s}}\\n' {{param.i}} > {{out}}/metrics.json
"""


def concurrent_part(ab: Ablate, root: Path, args, rows: list[Row]) -> None:
    rng = random.Random(f"{args.seed}-concurrent")
    row = Row("concurrent runs on one cache")
    row_rp = Row("concurrent runs: runs.parquet has every instance once")
    rows += [row, row_rp]
    n_inst = 20
    counts = [max(2, args.concurrent - 1), args.concurrent, args.concurrent + 1]
    for k in range(args.concurrent_rounds):
        n = counts[k % 3]
        d = root / "concurrent" / f"round-{k + 1}"
        d.mkdir(parents=True)
        cache, results, logfile = d / "cache", d / "results", d / "instances.log"
        pipeline = d / "pipeline.yaml"
        pipeline.write_text(conc_pipeline(logfile, rng.uniform(0.05, 0.2), n_inst))
        procs = [ab.start(["run", pipeline, "--cache", cache, "--results", results, "--json"], d, d / f"run-{j}.log") for j in range(n)]
        t0 = time.monotonic()
        rcs = []
        for p in procs:
            try:
                rcs.append(p.wait(timeout=max(1, RUN_TIMEOUT_S - (time.monotonic() - t0))))
            except subprocess.TimeoutExpired:
                kill_tree(p.pid)
                p.wait()
                rcs.append("timeout")
            LIVE.discard(p)
        ran = []
        for j in range(n):
            for line in (d / f"run-{j}.log").read_text(errors="replace").splitlines():
                if line.startswith('{"event":"summary"'):
                    ran.append(json.loads(line).get("ran"))
        lines = logfile.read_text().split() if logfile.exists() else []
        counter = collections.Counter(lines)
        wrong = {f"instance-{i}": counter.get(f"instance-{i}", 0) for i in range(n_inst) if counter.get(f"instance-{i}", 0) != 1}
        odd = [m for m in counter if not re.fullmatch(r"instance-\d+", m)]
        problems = []
        if any(rc != 0 for rc in rcs):
            first = next(j for j, rc in enumerate(rcs) if rc != 0)
            tail = (d / f"run-{first}.log").read_bytes()
            problems.append(("run failed", f"exit codes {rcs} ({why_failed(tail)})"))
        if wrong or odd:
            problems.append(("computed twice or never", f"instances not computed exactly once: {dict(list(wrong.items())[:5])}{' odd lines ' + str(odd[:3]) if odd else ''}"))
        follow = ab.run(["run", pipeline, "--cache", cache, "--results", results, "--json"], d)
        summary = None
        for line in follow.stdout.decode(errors="replace").splitlines():
            if line.startswith('{"event":"summary"'):
                summary = json.loads(line)
        if follow.returncode != 0 or not summary or summary.get("ran") != 0 or summary.get("cached") != n_inst:
            problems.append(("follow-up not all cached", f"follow-up run: exit {follow.returncode}, summary {summary}"
                             + (f" ({why_failed(follow.stderr)})" if follow.returncode != 0 else "")))
        detail = f"round {k + 1} ({n} processes): " + "; ".join(p[1] for p in problems)
        row.add(not problems, problems[0][0] if problems else "", detail)

        # runs.parquet: one row per instance, none missing, none repeated
        rp = []
        try:
            trows = ab.table(results / CONC_NAME / "runs.parquet", d)
            per = collections.Counter(r["label"] for r in trows if r["metric"] == "i")
            missing = [i for i in range(n_inst) if per.get(f"i={i}", 0) == 0]
            dup = {lbl: c for lbl, c in per.items() if c > 1}
            if missing:
                rp.append(("rows missing", f"{len(missing)} instance(s) without a row: i={missing[:5]}"))
            if dup:
                rp.append(("rows repeated", f"repeated rows: {dict(list(dup.items())[:5])}"))
        except Exception as err:  # noqa: BLE001
            rp.append(("unreadable", str(err)[:200]))
        row_rp.add(not rp, rp[0][0] if rp else "", f"round {k + 1} ({n} processes): " + "; ".join(p[1] for p in rp))
        status = "held" if not problems else "FAILED " + detail
        log(f"concurrent {k + 1}/{args.concurrent_rounds}  {n} processes  exit {rcs}  ran {ran}  {status}"
            f"{'' if not rp else '  runs.parquet: ' + '; '.join(p[1] for p in rp)}")


# --------------------------------------------------------------------------------------------
# part 3: parser fuzz

TOKENS = [
    b": ", b"- ", b"[", b"]", b"{", b"}", b",", b"&a ", b"*a", b"!!binary ", b"${vars.x}", b"<<: *a",
    b"? ", b"|", b"|-\n", b">", b"---\n", b"...\n", b"%YAML 1.2\n", b"%TAG ! tag:x,2000:\n", b"!!map ",
    b"!!python/object:os.system ", b"!custom ", b"#", b'"', b"'", b"\t", b"@", b"`", b"${", b"$${",
    b"${vars.}", b"${}", b"{out}", b"{in.nope}", b"{param.", b"\\", b"\r", b"\xef\xbb\xbf", b"\n\n",
    b"needs: [", b"matrix: {", b"op: ", b"~", b"*", b"&",
]
VALUES = [
    b"1e400", b"-1e400", b"99999999999999999999", b"-99999999999999999999", b"-0", b"-0.0", b".nan",
    b".NaN", b".inf", b"-.inf", b"0x7fffffffffffffff", b"0xffffffffffffffffff", b"0o777", b"0b101",
    b"18446744073709551616", b"-9223372036854775809", b"9223372036854775807", b"1e-400", b"4.9e-324",
    b"~", b"null", b"true", b"no", b"''", b'""', b"[]", b"{}", b"[[]]", b"${vars.nope}",
    b"${vars.${vars.x}}", b"${vars}", b"$${vars.x}", b"2001-12-14t21:59:43.10-05:00", b"!!binary aGVsbG8=",
    b"*a", b"&a 1", b"!!float 1", b"!!int x", b"!!str", b"? a", b"-1", b"0", b"1000000000",
    b"a" * 100_000, b"x" * 5000 + b": 1", b"[" + b"0," * 5000 + b"0]", b'"' + "é".encode() * 20_000 + b'"',
    b"[" + b"1e400," * 100 + b"1]", b"[" + b"1e400," * 3000 + b"1]",  # one error per element
    b"{" + b", ".join(b"k%d: 1" % i for i in range(2000)) + b"}",  # one unknown key per entry
    b"'\\u0000'", b'"\\u0000"', b'"\\ud800"', b'"\\x00"',
]
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xf0\x28\x8c\x28", b"\xed\xa0\x80", b"\xc0\x80", b"\xf8\x88\x80\x80\x80"]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def m_flip(d, r):
    b = bytearray(d or b" ")
    for _ in range(r.randint(1, 8)):
        b[r.randrange(len(b))] ^= 1 << (r.randrange(7) if r.random() < 0.85 else 7)  # mostly ASCII stays ASCII
    return bytes(b), "flip bytes"


def m_delete_lines(d, r):
    ls = _lines(d)
    i = r.randrange(len(ls))
    n = r.randint(1, 3)
    return b"\n".join(ls[:i] + ls[i + n :]), f"delete {n} line(s) at {i + 1}"


def m_dup_line(d, r):
    ls = _lines(d)
    i = r.randrange(len(ls))
    n = r.choice([1, 1, 2, 50])
    return b"\n".join(ls[: i + 1] + [ls[i]] * n + ls[i + 1 :]), f"duplicate line {i + 1} ×{n}"


def m_swap_lines(d, r):
    ls = _lines(d)
    i, j = r.randrange(len(ls)), r.randrange(len(ls))
    ls[i], ls[j] = ls[j], ls[i]
    return b"\n".join(ls), f"swap lines {i + 1} and {j + 1}"


def m_indent(d, r):
    ls = _lines(d)
    i = r.randrange(len(ls))
    s = ls[i]
    how = r.choice(["add", "remove", "tab", "all"])
    if how == "add":
        ls[i] = b" " * r.randint(1, 5) + s
    elif how == "remove":
        ls[i] = s.lstrip(b" ")
    elif how == "tab":
        ls[i] = b"\t" + s.lstrip(b" ")
    else:
        ls = [b" " * r.randint(0, 3) + x for x in ls]
    return b"\n".join(ls), f"indent {how} at {i + 1}"


def m_token(d, r):
    i = r.randrange(len(d) + 1)
    t = r.choice(TOKENS)
    return d[:i] + t + d[i:], f"insert {t[:20]!r} at byte {i}"


def m_value(d, r):
    spots = [m.end() for m in re.finditer(rb": ", d)] + [m.end() for m in re.finditer(rb"- ", d)]
    v = r.choice(VALUES)
    if not spots:
        return d + b"\nx: " + v, f"append value {v[:20]!r}"
    i = r.choice(spots)
    j = d.find(b"\n", i)
    j = len(d) if j < 0 else j
    if r.random() < 0.3:  # inside a flow collection: up to the next separator
        k = min([x for x in (d.find(b",", i), d.find(b"}", i), d.find(b"]", i)) if x >= 0] + [j])
        j = k
    return d[:i] + v + d[j:], f"value {v[:20]!r} at byte {i}"


def m_nesting(d, r):
    n = r.choice([64, 128, 1000, 10_000, 100_000])
    kind = r.choice(["flow-seq", "flow-map", "block", "block-seq"])
    if kind == "flow-seq":
        blob = b"deep: " + b"[" * n + b"]" * n
    elif kind == "flow-map":
        blob = b"deep: " + b"{a: " * n + b"}" * n
    elif kind == "block":
        n = min(n, 5000)
        blob = b"\n".join(b" " * (2 * k) + b"a:" for k in range(n)) + b" 1"
    else:
        n = min(n, 5000)
        blob = b"deep:\n" + b"\n".join(b" " * (2 * k) + b"- " for k in range(n)) + b"1"
    ls = _lines(d)
    i = r.randrange(len(ls) + 1)
    if r.random() < 0.5:  # at the top level, or inside a stage
        i = 0
    return b"\n".join(ls[:i] + [blob] + ls[i:]), f"nesting {kind} depth {n} at line {i + 1}"


def m_nul(d, r):
    b = bytearray(d)
    for _ in range(r.randint(1, 3)):
        b.insert(r.randrange(len(b) + 1), 0)
    return bytes(b), "insert NUL"


def m_utf8(d, r):
    i = r.randrange(len(d) + 1)
    t = r.choice(INVALID_UTF8)
    return d[:i] + t + d[i:], f"invalid UTF-8 {t!r} at byte {i}"


def m_alias_bomb(d, r):
    levels = r.randint(3, 9)
    lines = [b'lol0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, levels):
        lines.append(b"lol%d: &a%d [" % (k, k) + b",".join([b"*a%d" % (k - 1)] * 9) + b"]")
    where = r.choice(["top", "vars", "params"])
    if where == "top":
        return b"\n".join(lines) + b"\n" + d, f"alias bomb 9^{levels} at the top"
    if where == "vars" and b"\nvars:\n" in d:
        body = b"\n".join(b"  " + ln for ln in lines)
        return d.replace(b"\nvars:\n", b"\nvars:\n" + body + b"\n", 1), f"alias bomb 9^{levels} in vars"
    if where == "vars":
        return b"\n".join(lines) + b"\n" + d, f"alias bomb 9^{levels} at the top"
    m = re.search(rb"\n(\s+)params:\s*\n", d)
    if not m:
        return b"\n".join(lines) + b"\n" + d, f"alias bomb 9^{levels} at the top"
    ind = m.group(1) + b"  "
    body = b"\n".join(ind + ln for ln in lines)
    return d[: m.end()] + body + b"\n" + d[m.end() :], f"alias bomb 9^{levels} in params"


def m_merge(d, r):
    # an anchor on one stage's params, merged (or aliased) into another's
    ms = list(re.finditer(rb"\n(\s+)params:", d))
    if len(ms) < 2:
        return m_token(d, r)
    a, b = r.sample(ms, 2)
    d2 = d[: a.end()] + b" &a" + d[a.end() :]
    off = 3 if b.start() > a.start() else 0
    pos = b.end() + off
    ins = b" *a" if r.random() < 0.5 else b"\n" + b.group(1) + b"  <<: *a"
    return d2[:pos] + ins + d2[pos:], "anchor + alias/merge between stages"


def m_truncate(d, r):
    i = r.randrange(len(d) + 1)
    return d[:i], f"truncate at byte {i}"


def m_splice(d, r, seeds):
    other = _lines(r.choice(seeds)[1])
    a = r.randrange(len(other))
    chunk = other[a : a + r.randint(1, 8)]
    ls = _lines(d)
    i = r.randrange(len(ls) + 1)
    return b"\n".join(ls[:i] + chunk + ls[i:]), f"splice {len(chunk)} line(s) at {i + 1}"


def m_long_key(d, r):
    ls = _lines(d)
    i = r.randrange(len(ls) + 1)
    n = r.choice([1000, 70_000, 300_000])
    return b"\n".join(ls[:i] + [b"  " * r.randint(0, 3) + b"k" * n + b": 1"] + ls[i:]), f"key of {n} bytes at line {i + 1}"


def m_many_errors(d, r):
    """A stage with one error per element of a long list or map: is the report bounded?"""
    n = r.choice([200, 1000, 3000])
    kind = r.choice(["params", "needs", "matrix"])
    if kind == "params":
        blob = b"    params: {" + b", ".join(b"k%d: 1" % i for i in range(n)) + b"}"
    elif kind == "needs":
        blob = b"    needs: [" + b",".join([b"1e400"] * n) + b"]"
    else:
        blob = b"    matrix: { value: [" + b",".join([b"x"] * n) + b"] }"
    stage = b"  zz_many:\n    op: echo\n" + blob + b"\n"
    m = re.search(rb"^stages:[ \t]*\n", d, re.M)
    if not m:
        return d + b"\nstages:\n" + stage, f"many errors: {kind} ×{n} in a new stages map"
    return d[: m.end()] + stage + d[m.end() :], f"many errors: {kind} ×{n} in a new stage"


MUTATORS = [
    (m_flip, 4), (m_delete_lines, 3), (m_dup_line, 3), (m_swap_lines, 3), (m_indent, 3), (m_token, 5),
    (m_value, 6), (m_nesting, 1), (m_nul, 1), (m_utf8, 1), (m_alias_bomb, 1), (m_merge, 1),
    (m_truncate, 1), (m_splice, 2), (m_long_key, 1), (m_many_errors, 1),
]


def mutate(seed_data: bytes, r: random.Random, seeds) -> tuple[bytes, list[str]]:
    d = seed_data
    steps = []
    funcs, weights = zip(*MUTATORS)
    for _ in range(r.choice([1, 1, 1, 2, 2, 3, 4])):
        f = r.choices(funcs, weights)[0]
        d, what = f(d, r, seeds) if f is m_splice else f(d, r)
        steps.append(what)
    return d, steps


def fuzz_verdict(rc, stderr: bytes, input_len: int) -> list[str]:
    """Why one `plan` of a mutated file did not hold (empty: it held)."""
    problems = []
    if rc == "timeout":
        problems.append(f"timeout ({FUZZ_TIMEOUT_S}s)")
    elif rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "?"
        problems.append(f"killed by signal {-rc} ({name})")
    elif rc not in (0, 1, 2):
        problems.append(f"exit code {rc}" + (" (panic)" if rc == 101 else ""))
    if b"panicked" in stderr:
        problems.append("stderr says panicked")
    limit = 64 * 1024 + 2 * input_len
    if len(stderr) > limit:
        problems.append(f"stderr {len(stderr)} bytes > {limit}")
    return problems


def fuzz_part(ab: Ablate, root: Path, args, rows: list[Row]) -> None:
    row = Row("parser fuzz (mutated pipeline files)")
    row_nw = Row("fuzz: `plan` wrote no cache entry")
    rows += [row, row_nw]
    valid = [(p, p.read_bytes()) for p in sorted((REPO / "pipelines").glob("*.yaml"))]
    invalid = [(p, p.read_bytes()) for p in sorted((REPO / "crates/ablate-cli/tests/fixtures/invalid").glob("*.yaml"))]
    seeds = valid * 3 + invalid  # a mutant of a valid file gets further into the planner
    if not seeds:
        raise RuntimeError("no seed files found")
    base = root / "fuzz"
    work, cache, failures = base / "work", base / "cache", base / "failures"
    for d in (work, cache, failures):
        d.mkdir(parents=True, exist_ok=True)
    log(f"fuzz: {len(valid)} pipelines + {len(invalid)} invalid fixtures as seeds, {args.fuzz} mutants, 2 workers, {FUZZ_TIMEOUT_S}s each")
    lock = threading.Lock()
    codes: collections.Counter = collections.Counter()
    done = [0]
    slowest = [0.0, ""]

    def one(idx: int):
        r = random.Random(f"{args.seed}-fuzz-{idx}")
        seed_path, seed_data = r.choice(seeds)
        data, steps = mutate(seed_data, r, seeds)
        f = work / f"case-{idx:05d}.yaml"
        f.write_bytes(data)
        t0 = time.monotonic()
        res = ab.run(["plan", f, "--cache", cache], work, timeout=FUZZ_TIMEOUT_S, stdout=subprocess.DEVNULL)
        dt = time.monotonic() - t0
        err = res.stderr
        problems = fuzz_verdict(res.returncode, err, len(data))
        with lock:
            codes[res.returncode] += 1
            done[0] += 1
            if dt > slowest[0]:
                slowest[0], slowest[1] = dt, f"case-{idx:05d}"
            if problems:
                keep = failures / f"case-{idx:05d}.yaml"
                shutil.copy(f, keep)
                (failures / f"case-{idx:05d}.txt").write_text(
                    f"seed file: {seed_path.relative_to(REPO)}\nmutations: {steps}\nexit: {res.returncode}\n"
                    f"problems: {problems}\nreproduce: {ab.binary} plan {keep} --cache <empty dir>\n"
                    f"--- stderr ({len(err)} bytes, first 4000) ---\n{err[:4000].decode(errors='replace')}\n"
                )
                tag = next(t for t in ("timeout", "signal", "panic", "exit code", "panicked", "stderr") if t in problems[0])
                tag = {"stderr": "stderr over the bound", "panicked": "panic", "signal": "killed by a signal"}.get(tag, tag)
                row.add(False, tag, f"{keep} ({seed_path.name}; {'; '.join(steps)[:100]}): {'; '.join(problems)}")
                log(f"fuzz case {idx}: FAILED {'; '.join(problems)}  ({seed_path.name}: {'; '.join(steps)[:120]}) -> {keep}")
            else:
                row.add(True)
            if done[0] % max(1, args.fuzz // 10) == 0:
                log(f"fuzz: {done[0]}/{args.fuzz}  held {row.held}  exit codes {dict(sorted(codes.items(), key=str))}")
        f.unlink(missing_ok=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for fut in [pool.submit(one, i) for i in range(args.fuzz)]:
            fut.result()
    entries = [e.name[:8] for e in entry_dirs(cache)]
    row_nw.add(not entries, "entries", f"{len(entries)} cache entries after `plan` only: {entries[:5]}")
    row.info.append("exit codes " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items(), key=str)))
    row.info.append(f"slowest {slowest[0]:.2f}s")
    if row.fails:
        row.info.append(f"inputs kept in {failures}")


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke run (8 kills, 200 fuzz cases, 2 concurrent rounds)")
    ap.add_argument("--seed", type=int, default=1, help="seed of every random choice (default 1)")
    ap.add_argument("--kills", type=int, help="kill -9 rounds (default 30; a fifth of them during --force)")
    ap.add_argument("--fuzz", type=int, help="mutated pipeline files (default 2000)")
    ap.add_argument("--concurrent", type=int, default=3, help="processes per concurrent round; rounds cycle through N-1, N, N+1 (min 2; default 3)")
    ap.add_argument("--concurrent-rounds", type=int, help="concurrent rounds (default 5)")
    ap.add_argument("--parts", default="selftest,kill,concurrent,fuzz", help="comma-separated subset of selftest,kill,concurrent,fuzz")
    ap.add_argument("--bin", type=Path, default=REPO / "target/release/ablate", help="the binary (copied before use)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory even when everything held")
    args = ap.parse_args()
    args.kills = args.kills if args.kills is not None else (8 if args.quick else 30)
    args.fuzz = args.fuzz if args.fuzz is not None else (200 if args.quick else 2000)
    args.concurrent_rounds = args.concurrent_rounds if args.concurrent_rounds is not None else (2 if args.quick else 5)
    args.concurrent = max(2, args.concurrent)
    parts = set(args.parts.split(","))

    if not args.bin.exists():
        log(f"no binary at {args.bin}: run `cargo build --release -p ablate-cli` (or `just chaos`)")
        return 2
    root = Path(tempfile.mkdtemp(prefix="ablate-chaos-"))
    binary = root / "ablate"
    shutil.copy2(args.bin, binary)
    bin_sha = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    bin_time = datetime.datetime.fromtimestamp(args.bin.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
    marker = f"ablatechaos{uuid.uuid4().hex[:12]}"
    ab = Ablate(binary, marker)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    command = "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO) if sys.argv[0].startswith(str(REPO)) else sys.argv[0], *sys.argv[1:]])
    started = datetime.datetime.now().astimezone()
    log(f"chaos campaign: {started:%Y-%m-%d %H:%M:%S %Z}, commit {commit}{' (+ uncommitted changes)' if dirty else ''}")
    log(f"binary: {args.bin} (built {bin_time}, sha256 {bin_sha}), copied to {binary}")
    log(f"temp dir: {root}   marker: {marker}   seed: {args.seed}")

    rows: list[Row] = []
    times: dict[str, float] = {}
    crashed = None
    try:
        if "kill" in parts or "selftest" in parts:
            t0 = time.monotonic()
            if "kill" not in parts:
                args.kills = 0
            kill_part(ab, root, args, marker, rows, "selftest" in parts)
            times["kill -9 (with self-test)" if "selftest" in parts else "kill -9"] = time.monotonic() - t0
        if "concurrent" in parts:
            t0 = time.monotonic()
            concurrent_part(ab, root, args, rows)
            times["concurrent"] = time.monotonic() - t0
        if "fuzz" in parts:
            t0 = time.monotonic()
            fuzz_part(ab, root, args, rows)
            times["fuzz"] = time.monotonic() - t0
    except KeyboardInterrupt:
        crashed = "interrupted"
    except Exception as err:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        crashed = f"{type(err).__name__}: {err}"
    finally:
        for p in list(LIVE):
            if p.poll() is None:
                kill_tree(p.pid)
                p.wait()
        for pid, _ in marker_procs(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    if "kill" not in parts:
        rows = [r for r in rows if r.tried]
    total = sum(times.values())
    log("")
    log(f"## ablate chaos campaign — {started:%Y-%m-%d %H:%M} — commit {commit}{' (dirty tree)' if dirty else ''}")
    log("")
    log(f"`{command}` (seed {args.seed}; binary sha256 {bin_sha}, built {bin_time})")
    log("")
    log("| check | tried | held | notes |")
    log("|---|---:|---:|---|")
    for r in rows:
        log(f"| {r.check} | {r.tried} | {r.held} | {r.notes()} |")
    log("")
    log("wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()) + f"; total {total:.0f}s")
    failed = [r for r in rows if r.held < r.tried]
    if failed:
        log("")
        log("### what did not hold")
        for r in failed:
            log(f"- {r.check}:")
            for f in r.fails[:12]:
                log(f"  - {f}")
            if len(r.fails) > 12:
                log(f"  - … {len(r.fails) - 12} more")
    if crashed:
        log(f"\nthe campaign stopped early: {crashed}")
    if failed or crashed or args.keep:
        log(f"\nkept: {root} (per-round logs under kill/rounds/, fuzz inputs that failed under fuzz/failures/)")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed or crashed else 0


if __name__ == "__main__":
    sys.exit(main())
