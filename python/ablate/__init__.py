"""ablate's side of a training script: the protocol of a `cmd` stage in a few calls.

Inside an ablate run the calls read and write what ablate gives the program (`$ABLATE_PARAMS`,
`$ABLATE_METRICS`, `$ABLATE_CHECKPOINT`, `{out}/metrics.json`, ...); run on its own, the same
script gets its defaults, a temporary checkpoint directory, and its metrics on stderr::

    import ablate
    p = ablate.params({"lr": 0.1, "epochs": 10, "seed": 0})
    for epoch in range(p["epochs"]):
        loss = ...
        ablate.log(step=epoch, loss=loss)
        if ablate.should_stop(epoch):
            break
    ablate.final(test_acc=0.93)

Standard library only; `ablate.runs` (results as a DataFrame) needs pyarrow and pandas, or
polars, and imports them when called.
"""

import atexit
import json
import math
import numbers
import os
import pathlib
import shutil
import sys
import tempfile

from ._results import entry, runs

__version__ = "0.1.0"

__all__ = [
    "checkpoint_dir",
    "entry",
    "final",
    "inside",
    "log",
    "out_dir",
    "params",
    "runs",
    "should_stop",
    "stop_at",
    "threads",
]


def inside():
    """Whether this process runs as an ablate `cmd` stage (`$ABLATE_PARAMS` is set)."""
    return bool(os.environ.get("ABLATE_PARAMS"))


def params(defaults=None, **kw):
    """The instance's params: `$ABLATE_PARAMS` inside ablate, with `defaults` (a dict) and `kw`
    filling in the names it lacks; outside, `defaults` updated with `kw`.

    Values are never converted to a default's type: a param is what the pipeline says.
    """
    merged = dict(defaults or {})
    merged.update(kw)
    path = os.environ.get("ABLATE_PARAMS")
    if not path:
        return merged
    try:
        with open(path, encoding="utf-8") as f:
            given = json.load(f)
    except (OSError, ValueError) as e:
        raise RuntimeError("failed to read the params file `%s` ($ABLATE_PARAMS): %s" % (path, e)) from e
    if not isinstance(given, dict):
        raise RuntimeError("the params file `%s` ($ABLATE_PARAMS) is not a JSON object" % path)
    merged.update(given)
    return merged


def _number(key, value, finite):
    """`value` as a JSON-ready number (int or float) or None; TypeError/ValueError naming `key`."""
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise TypeError("metric `%s` = %r is not a number" % (key, value))
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        # numbers.Real, and scalars that convert (NumPy scalars, 0-d arrays, one-element tensors).
        x = float(value)
    except (TypeError, ValueError) as e:
        raise TypeError("metric `%s` = %r is not a number" % (key, value)) from e
    if finite and not math.isfinite(x):
        raise ValueError(
            "final metric `%s` = %r: ablate cannot store a non-finite final value; pass None for "
            "a metric without a value (a training that diverges shows it with ablate.log)" % (key, x)
        )
    return x


def _short(x):
    """A value as ablate's progress line shows it."""
    if x is None:
        return "null"
    if x != 0 and math.isfinite(x) and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return "%.3e" % x
    return "%.4f" % x


class _Log:
    """The metrics log of this process: its open file and its step counter."""

    def __init__(self):
        self.path = None
        self.file = None
        self.pid = None
        self.step = None

    def write(self, line):
        path = os.environ["ABLATE_METRICS"]
        if self.file is None or path != self.path or self.pid != os.getpid():
            self.close()
            self.file = open(path, "a", encoding="utf-8")
            self.path, self.pid = path, os.getpid()
        # One write of a whole line on an O_APPEND file: ablate never reads half of one that
        # another process interleaved.
        self.file.write(line)
        self.file.flush()

    def close(self):
        if self.file is not None and self.pid == os.getpid():
            self.file.close()
        self.file = None


_log = _Log()
atexit.register(_log.close)


def log(step=None, **metrics):
    """Appends one line `{"step": N, name: value, ...}` to the metrics log and flushes it.

    `step` (a whole number >= 0) resets the counter; without it the line's step is the previous
    line's plus one, 0 for the first of this process. Values are numbers (NaN and infinities
    are written as NaN/Infinity/-Infinity, which ablate reads as such: a run that logs one has
    diverged) or None (no value). Inside ablate the line goes to `$ABLATE_METRICS`; outside,
    a short form of it goes to stderr and nothing is kept.
    """
    if step is None:
        step = 0 if _log.step is None else _log.step + 1
    else:
        if isinstance(step, bool):
            raise TypeError("step = %r is not a whole number" % (step,))
        try:
            step = int(step.__index__())
        except AttributeError:
            raise TypeError("step = %r is not a whole number" % (step,)) from None
        if step < 0:
            raise ValueError("step = %d: steps are whole numbers >= 0" % step)
    values = {k: _number(k, v, finite=False) for k, v in metrics.items()}
    _log.step = step
    if os.environ.get("ABLATE_METRICS"):
        line = {"step": step}
        line.update(values)
        # allow_nan (the default) writes NaN/Infinity/-Infinity, the spelling ablate reads.
        _log.write(json.dumps(line, allow_nan=True) + "\n")
    else:
        text = " ".join("%s %s" % (k, _short(v)) for k, v in values.items())
        print("step %d: %s" % (step, text), file=sys.stderr, flush=True)


_temp_checkpoint = None


def checkpoint_dir():
    """The directory that survives attempts: `$ABLATE_CHECKPOINT` (created if missing) inside
    ablate; outside, a temporary directory made once per process and removed at its exit."""
    global _temp_checkpoint
    path = os.environ.get("ABLATE_CHECKPOINT")
    if path:
        p = pathlib.Path(path)
        p.mkdir(parents=True, exist_ok=True)
        return p
    if _temp_checkpoint is None or not _temp_checkpoint.is_dir():
        _temp_checkpoint = pathlib.Path(tempfile.mkdtemp(prefix="ablate-ckpt-"))
        atexit.register(shutil.rmtree, str(_temp_checkpoint), True)
    return _temp_checkpoint


def out_dir():
    """Where outputs go: `$ABLATE_OUT` (the cache entry) inside ablate, else the current directory."""
    return pathlib.Path(os.environ.get("ABLATE_OUT") or ".")


def final(**metrics):
    """Records final metrics in `{out}/metrics.json`, merged with what it holds already.

    Values are finite numbers, or None for a metric without a value; NaN or an infinity
    raises ValueError (ablate refuses it in a result). Outside ablate they go to stderr.
    """
    values = {k: _number(k, v, finite=True) for k, v in metrics.items()}
    out = os.environ.get("ABLATE_OUT")
    if not out:
        text = " ".join("%s %s" % (k, _short(v)) for k, v in values.items())
        print("final: %s" % text, file=sys.stderr, flush=True)
        return
    path = os.path.join(out, "metrics.json")
    merged = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            merged = json.load(f)
        if not isinstance(merged, dict):
            raise RuntimeError("`%s` is not a JSON object; ablate.final cannot add to it" % path)
    merged.update(values)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(merged, f, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def stop_at():
    """The step to stop after under early stopping (`$ABLATE_STOP_AT`), or None."""
    value = os.environ.get("ABLATE_STOP_AT")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError("$ABLATE_STOP_AT = %r is not a whole number" % value) from None


def should_stop(step):
    """Whether the run should stop after `step` (early stopping's budget): save the
    checkpoint, then exit 0; a later attempt resumes from it."""
    at = stop_at()
    return at is not None and step >= at


def threads():
    """The CPU share to use (`torch.set_num_threads(ablate.threads())`): `$ABLATE_THREADS`
    inside ablate, else the CPUs this process may run on."""
    value = os.environ.get("ABLATE_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError("$ABLATE_THREADS = %r is not a whole number" % value) from None
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
