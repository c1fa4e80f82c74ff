"""Unit tests of the `ablate` module, outside ablate: the protocol's environment is set by hand
(monkeypatch), files live in tmp_path, and `ablate.entry` runs a fake `ablate` command."""

import builtins
import json
import math
import os
import pathlib
import re
import sys
import textwrap

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import ablate  # noqa: E402
from ablate import _results  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def outside(monkeypatch):
    """Every test starts outside ablate, with a fresh log counter and checkpoint directory."""
    for k in list(os.environ):
        if k.startswith("ABLATE_"):
            monkeypatch.delenv(k)
    ablate._log.close()
    ablate._log.step = None
    ablate._temp_checkpoint = None
    yield
    ablate._log.close()
    ablate._log.step = None


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().splitlines()]


# --- params ---------------------------------------------------------------------------------


def test_params_outside_are_the_defaults_updated_with_keywords():
    assert ablate.params({"lr": 0.1, "seed": 0}, seed=3) == {"lr": 0.1, "seed": 3}
    assert ablate.params() == {}
    assert not ablate.inside()


def test_params_inside_come_from_the_file_and_defaults_fill_the_rest(tmp_path, monkeypatch):
    f = tmp_path / "ablate-params.json"
    f.write_text(json.dumps({"lr": 1, "layers": [2, 3], "opt": "adam"}))
    monkeypatch.setenv("ABLATE_PARAMS", str(f))
    p = ablate.params({"lr": 0.1, "epochs": 10}, seed=0)
    # The file wins, its extra keys are kept, and a default's type is not forced on it.
    assert p == {"lr": 1, "layers": [2, 3], "opt": "adam", "epochs": 10, "seed": 0}
    assert type(p["lr"]) is int
    assert ablate.inside()


def test_params_inside_an_unreadable_file_names_it(tmp_path, monkeypatch):
    f = tmp_path / "params.json"
    f.write_text("[1, 2]")
    monkeypatch.setenv("ABLATE_PARAMS", str(f))
    with pytest.raises(RuntimeError, match="not a JSON object"):
        ablate.params()
    monkeypatch.setenv("ABLATE_PARAMS", str(tmp_path / "missing.json"))
    with pytest.raises(RuntimeError, match="missing.json"):
        ablate.params()


# --- log ------------------------------------------------------------------------------------


def test_log_counts_steps_from_zero_and_an_explicit_step_resets_the_counter(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("ABLATE_METRICS", str(log))
    ablate.log(loss=0.5)
    ablate.log(loss=0.4)
    ablate.log(step=10, loss=0.3)
    ablate.log(loss=0.2)
    ablate.log(step=3, loss=0.1)  # a resumed run goes back
    ablate.log(acc=1)
    assert [(l["step"], l.get("loss", l.get("acc"))) for l in lines(log)] == [
        (0, 0.5), (1, 0.4), (10, 0.3), (11, 0.2), (3, 0.1), (4, 1),
    ]


def test_log_is_on_disk_as_soon_as_it_returns(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("ABLATE_METRICS", str(log))
    ablate.log(step=7, loss=0.25)
    # Read while the module still holds the file open: ablate follows the log as it grows.
    assert log.read_text() == '{"step": 7, "loss": 0.25}\n'
    ablate.log(loss=0.125)
    assert log.read_text().endswith('{"step": 8, "loss": 0.125}\n')


def test_log_appends_to_an_existing_log(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 0, "loss": 1.0}\n')
    monkeypatch.setenv("ABLATE_METRICS", str(log))
    ablate.log(step=1, loss=0.5)
    assert lines(log) == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}]


def test_log_writes_non_finite_values_as_ablate_reads_them(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("ABLATE_METRICS", str(log))
    ablate.log(a=float("nan"), b=float("inf"), c=float("-inf"), d=None, e=2)
    raw = log.read_text()
    # The spelling ablate's metrics_log::parse_json takes: bare NaN, Infinity, -Infinity.
    assert raw == '{"step": 0, "a": NaN, "b": Infinity, "c": -Infinity, "d": null, "e": 2}\n'
    back = json.loads(raw)
    assert math.isnan(back["a"]) and back["b"] == math.inf and back["c"] == -math.inf
    assert back["d"] is None


def test_log_keeps_every_bit_of_a_float(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("ABLATE_METRICS", str(log))
    x = 0.1 + 0.2
    ablate.log(x=x)
    assert lines(log)[0]["x"] == x


def test_log_takes_scalars_that_convert_to_float(tmp_path, monkeypatch):
    class Tensor:  # a 0-d tensor or NumPy scalar
        def __float__(self):
            return 0.75

    log = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("ABLATE_METRICS", str(log))
    ablate.log(loss=Tensor())
    assert lines(log) == [{"step": 0, "loss": 0.75}]


@pytest.mark.parametrize("value", ["0.5", True, [1.0], object()])
def test_log_refuses_a_value_that_is_not_a_number_naming_its_key(tmp_path, monkeypatch, value):
    log = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("ABLATE_METRICS", str(log))
    with pytest.raises(TypeError, match="metric `val_acc`"):
        ablate.log(loss=0.5, val_acc=value)
    assert not log.exists() or log.read_text() == ""
    ablate.log(loss=0.5)
    assert lines(log) == [{"step": 0, "loss": 0.5}]  # a refused line does not move the counter


@pytest.mark.parametrize("step, error", [(-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)])
def test_log_refuses_a_step_that_is_not_a_whole_number(step, error):
    with pytest.raises(error, match="step"):
        ablate.log(step=step, loss=0.5)


def test_log_outside_prints_to_stderr_and_keeps_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ablate.log(loss=0.58934, big=123456.0, nan=float("nan"))
    ablate.log(loss=0.5)
    err = capsys.readouterr().err
    assert err == "step 0: loss 0.5893 big 1.235e+05 nan nan\nstep 1: loss 0.5000\n"
    assert list(tmp_path.iterdir()) == []


# --- checkpoint_dir, out_dir ------------------------------------------------------------------


def test_checkpoint_dir_inside_is_the_given_directory_created(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt" / "deeper"
    monkeypatch.setenv("ABLATE_CHECKPOINT", str(ckpt))
    assert ablate.checkpoint_dir() == ckpt
    assert ckpt.is_dir()


def test_checkpoint_dir_outside_is_one_temporary_directory_per_process():
    first = ablate.checkpoint_dir()
    assert first.is_dir() and first.name.startswith("ablate-ckpt-")
    assert ablate.checkpoint_dir() == first


def test_out_dir(tmp_path, monkeypatch):
    assert ablate.out_dir() == pathlib.Path(".")
    monkeypatch.setenv("ABLATE_OUT", str(tmp_path))
    assert ablate.out_dir() == tmp_path


# --- final ----------------------------------------------------------------------------------


def test_final_writes_metrics_json_merged_with_what_it_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_OUT", str(tmp_path))
    (tmp_path / "metrics.json").write_text('{"test_acc": 0.5, "auc": 0.7}')
    ablate.final(test_acc=0.93, steps=100)
    ablate.final(auc=None)  # a metric without a value
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"test_acc": 0.93, "auc": None, "steps": 100}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_final_refuses_a_non_finite_value_naming_its_key(tmp_path, monkeypatch, value):
    monkeypatch.setenv("ABLATE_OUT", str(tmp_path))
    ablate.final(acc=0.5)
    with pytest.raises(ValueError, match="final metric `auc`"):
        ablate.final(acc=0.9, auc=value)
    # Nothing of a refused call is written.
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"acc": 0.5}


def test_final_refuses_a_value_that_is_not_a_number(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_OUT", str(tmp_path))
    with pytest.raises(TypeError, match="metric `name`"):
        ablate.final(name="resnet")


def test_final_outside_prints_to_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ablate.final(test_acc=0.93)
    assert capsys.readouterr().err == "final: test_acc 0.9300\n"
    assert list(tmp_path.iterdir()) == []


# --- threads, stop_at -----------------------------------------------------------------------


def test_threads(monkeypatch):
    assert ablate.threads() >= 1
    monkeypatch.setenv("ABLATE_THREADS", "3")
    assert ablate.threads() == 3
    monkeypatch.setenv("ABLATE_THREADS", "many")
    with pytest.raises(ValueError, match="ABLATE_THREADS"):
        ablate.threads()


def test_stop_at_and_should_stop(monkeypatch):
    assert ablate.stop_at() is None
    assert not ablate.should_stop(10**9)
    monkeypatch.setenv("ABLATE_STOP_AT", "3")
    assert ablate.stop_at() == 3
    assert [ablate.should_stop(s) for s in range(5)] == [False, False, False, True, True]
    monkeypatch.setenv("ABLATE_STOP_AT", "x")
    with pytest.raises(ValueError, match="ABLATE_STOP_AT"):
        ablate.stop_at()


# --- runs -----------------------------------------------------------------------------------


def test_pipeline_name_from_a_file_or_a_name(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text("# a sweep\nstages:\n  train:\n    name: not-this\nname: 'my sweep'   # names results/\n")
    assert _results._pipeline_name(f) == "my sweep"
    f.write_text('name: "quoted \\u00e9"\n')
    assert _results._pipeline_name(str(f)) == "quoted \u00e9"
    f.write_text("name: plain-name # comment\n")
    assert _results._pipeline_name(f) == "plain-name"
    assert _results._pipeline_name("mnist-style") == "mnist-style"
    f.write_text("stages: {}\n")
    with pytest.raises(ValueError, match="no top-level `name:`"):
        _results._pipeline_name(f)


def test_runs_reads_the_current_rows_with_typed_params(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({
        "pipeline": ["demo"] * 3,
        "instance": ["a" * 64, "b" * 64, "c" * 64],
        "current": [True, False, True],
        "metric": ["acc", "acc", "acc"],
        "value": [0.9, 0.1, float("nan")],
        "step": pa.array([None, None, 4], pa.int64()),
        "lr": [0.3, 0.3, 1.5],
        "batch": pa.array([16, 16, 64], pa.int64()),
    })
    (tmp_path / "results" / "demo").mkdir(parents=True)
    pq.write_table(table, tmp_path / "results" / "demo" / "runs.parquet")
    pipeline = tmp_path / "sweep.yaml"
    pipeline.write_text("name: demo\nstages: {}\n")

    df = ablate.runs(pipeline, results=tmp_path / "results")
    assert list(df.instance) == ["a" * 64, "c" * 64]
    assert list(df.batch) == [16, 64] and str(df.batch.dtype).lower().startswith("int")
    assert list(df.lr) == [0.3, 1.5]
    assert len(ablate.runs("demo", results=tmp_path / "results", current=False)) == 3


def test_runs_reads_results_from_ablate_results(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_RESULTS", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(_results, "_reader", lambda: lambda path, current: (path, current))
    with pytest.raises(FileNotFoundError, match="no results for pipeline `demo`"):
        ablate.runs("demo")
    (tmp_path / "elsewhere" / "demo").mkdir(parents=True)
    (tmp_path / "elsewhere" / "demo" / "runs.parquet").write_bytes(b"")
    assert ablate.runs("demo", current=False) == (tmp_path / "elsewhere" / "demo" / "runs.parquet", False)


def hide(monkeypatch, *names):
    """Makes `import NAME` fail for these modules, as if they were not installed."""
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] in names:
            raise ImportError("No module named %r" % name)
        return real(name, *args, **kwargs)

    for n in list(sys.modules):
        if n.split(".")[0] in names:
            monkeypatch.delitem(sys.modules, n)
    monkeypatch.setattr(builtins, "__import__", fake)


def test_runs_without_pyarrow_or_polars_says_what_to_install(tmp_path, monkeypatch):
    hide(monkeypatch, "pyarrow", "pandas", "polars")
    with pytest.raises(ImportError) as e:
        ablate.runs("demo", results=tmp_path)
    assert str(e.value) == "ablate.runs needs pyarrow (pip install 'ablate[pandas]') or polars"


def test_runs_falls_back_to_polars(tmp_path, monkeypatch):
    class Frame:
        def __init__(self, path):
            self.path, self.filters = path, []

        def filter(self, expr):
            self.filters.append(expr)
            return self

    polars = type(sys)("polars")
    polars.read_parquet = Frame
    polars.col = lambda name: ("col", name)
    hide(monkeypatch, "pyarrow", "pandas")
    monkeypatch.setitem(sys.modules, "polars", polars)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "runs.parquet").write_bytes(b"")
    df = ablate.runs("demo", results=tmp_path)
    assert isinstance(df, Frame) and df.filters == [("col", "current")]


def test_importing_ablate_needs_only_the_standard_library():
    import subprocess

    code = textwrap.dedent("""
        import sys
        import ablate
        print(sorted(m for m in ("pyarrow", "pandas", "polars", "numpy") if m in sys.modules))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    out = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, check=True)
    assert out.stdout.decode().strip() == "[]"


# --- entry ----------------------------------------------------------------------------------


SHOWN = {
    "key": "ab" * 32,
    "instance": "train[lr=0.3,seed=0]",
    "status": "done",
    "params": {"lr": 0.3, "seed": 0},
    "metrics": {"test_acc": 0.93},
    "path": "/cache/v1/entries/abab",
    "failed_dir": None,
    "files": [{"path": "/cache/v1/entries/abab/manifest.json", "size": 10},
              {"path": "/cache/v1/entries/abab/model.json", "size": 20}],
}


def fake_ablate(directory, exit_code=0):
    """An `ablate` command that notes its arguments and prints SHOWN."""
    directory.mkdir(exist_ok=True)
    exe = directory / "ablate"
    exe.write_text(textwrap.dedent("""\
        #!%s
        import json, sys
        with open(%r, "w") as f:
            json.dump(sys.argv[1:], f)
        if %d:
            sys.stderr.write("error: nothing in the cache matches `nope`\\n")
            sys.exit(%d)
        print(%r)
    """ % (sys.executable, str(directory / "argv.json"), exit_code, exit_code, json.dumps(SHOWN))))
    exe.chmod(0o755)
    return exe


def test_entry_runs_ablate_show_json_from_path(tmp_path, monkeypatch):
    exe = fake_ablate(tmp_path / "bin")
    monkeypatch.setenv("PATH", "%s%s%s" % (exe.parent, os.pathsep, os.environ.get("PATH", "")))
    e = ablate.entry("train[lr=0.3,seed=0]")
    assert json.loads((tmp_path / "bin" / "argv.json").read_text()) == ["show", "train[lr=0.3,seed=0]", "--json"]
    assert e["path"] == pathlib.Path("/cache/v1/entries/abab")
    assert e["files"] == [pathlib.Path("/cache/v1/entries/abab/manifest.json"),
                          pathlib.Path("/cache/v1/entries/abab/model.json")]
    assert e["metrics"] == {"test_acc": 0.93} and e["failed_dir"] is None


def test_entry_passes_cache_and_pipeline_and_honours_ablate_bin(tmp_path, monkeypatch):
    exe = fake_ablate(tmp_path / "elsewhere")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("ABLATE_BIN", str(exe))
    ablate.entry("abab", cache=tmp_path / "c", pipeline="sweep.yaml")
    argv = json.loads((tmp_path / "elsewhere" / "argv.json").read_text())
    assert argv == ["--cache", str(tmp_path / "c"), "show", "abab", "--json", "--pipeline", "sweep.yaml"]


def test_entry_failure_quotes_ablate(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_BIN", str(fake_ablate(tmp_path / "bin", exit_code=2)))
    with pytest.raises(RuntimeError, match=re.escape("(exit 2):\nerror: nothing in the cache matches `nope`")):
        ablate.entry("nope")


def test_entry_without_the_binary_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pip install ablate"):
        ablate.entry("abab")


# --- version --------------------------------------------------------------------------------


def test_version_is_the_workspace_version():
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^\[workspace\.package\]\s*\nversion = "([^"]+)"', cargo, re.M).group(1)
    assert ablate.__version__ == version
