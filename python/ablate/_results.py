"""Reading results from Python: `runs` (a pipeline's `runs.parquet`) and `entry` (one cache
entry, through `ablate show --json`). DataFrame libraries are imported only when called."""

import json
import os
import pathlib
import re
import shutil
import subprocess

_NO_FRAMES = "ablate.runs needs pyarrow (pip install 'ablate[pandas]') or polars"

# The top-level `name:` of a pipeline file; a YAML parser would be a dependency.
_NAME = re.compile(r"""^name:[ \t]*(?:"((?:[^"\\]|\\.)*)"|'((?:[^']|'')*)'|([^#\s][^#]*?))[ \t]*(?:#.*)?$""")


def _pipeline_name(pipeline):
    """`pipeline` is a pipeline file (its `name:`) or a name."""
    text = str(pipeline)
    if not text.endswith((".yaml", ".yml")):
        return text
    try:
        with open(text, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise FileNotFoundError("failed to read the pipeline file `%s`: %s" % (text, e)) from e
    for line in lines:
        m = _NAME.match(line)
        if m:
            double, single, plain = m.groups()
            if double is not None:
                return json.loads('"%s"' % double)
            if single is not None:
                return single.replace("''", "'")
            return plain
    raise ValueError("the pipeline file `%s` has no top-level `name:`" % text)


def runs(pipeline, results=None, current=True):
    """The rows of `<results>/<name>/runs.parquet` as a pandas DataFrame (pyarrow and pandas),
    else a polars one (polars); params are typed columns.

    `pipeline`: a pipeline file (`sweep.yaml`: its `name:` is read) or a pipeline name.
    `results`: the results directory (default `$ABLATE_RESULTS`, else `results`, as for the
    `ablate` command). `current`: only the rows of the plan of the pipeline's latest run.
    """
    name = _pipeline_name(pipeline)
    results = results if results is not None else os.environ.get("ABLATE_RESULTS") or "results"
    path = pathlib.Path(results) / name / "runs.parquet"
    reader = _reader()
    if not path.is_file():
        raise FileNotFoundError(
            "no results for pipeline `%s`: `%s` does not exist (hint: `ablate run` the pipeline "
            "first, or pass results= the directory it wrote to)" % (name, path)
        )
    return reader(path, current)


def _reader():
    """How to read a Parquet file into a DataFrame with what is installed."""
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        return _read_pandas
    try:
        import polars  # noqa: F401
    except ImportError:
        raise ImportError(_NO_FRAMES) from None
    return _read_polars


def _read_pandas(path, current):
    import pandas

    df = pandas.read_parquet(path, engine="pyarrow")
    if current:
        df = df[df["current"]].reset_index(drop=True)
    return df


def _read_polars(path, current):
    import polars

    df = polars.read_parquet(path)
    if current:
        df = df.filter(polars.col("current"))
    return df


def _binary():
    found = os.environ.get("ABLATE_BIN") or shutil.which("ablate")
    if not found:
        raise FileNotFoundError(
            "ablate.entry runs the `ablate` command, which is not on PATH (hint: `pip install "
            "ablate`, or set $ABLATE_BIN to the binary)"
        )
    return found


def entry(key_or_label, cache=None, pipeline=None):
    """One instance's entry as `ablate show KEY --json` prints it: params, status, metrics,
    `path` (its directory, a Path) and `files` (Paths).

    `key_or_label`: a key or a unique prefix of one, or `STAGE[LABEL]` (`train[lr=0.3,seed=0]`).
    `cache`: the cache directory (default: the command's, `$ABLATE_CACHE` or `cache`).
    `pipeline`: a pipeline file whose plan names the instance.
    """
    cmd = [_binary()]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    cmd += ["show", str(key_or_label), "--json"]
    if pipeline is not None:
        cmd += ["--pipeline", str(pipeline)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if done.returncode != 0:
        raise RuntimeError(
            "`%s` failed (exit %d):\n%s" % (" ".join(cmd), done.returncode, done.stderr.strip())
        )
    shown = json.loads(done.stdout)
    for k in ("path", "failed_dir"):
        if shown.get(k) is not None:
            shown[k] = pathlib.Path(shown[k])
    shown["files"] = [pathlib.Path(f["path"]) for f in shown.get("files") or []]
    return shown
