//! Rendering tests: each kind drawn from small synthetic tables into a temp dir, checked by
//! counting the SVG elements the data should produce and by reading the PNG header.

use std::collections::BTreeMap;
use std::path::Path;

use ablate_cache::{HASH_SCHEME, InstanceKey, KeyInput, Manifest, Metric, Origin, Store};
use ablate_results::Table;
use ablate_run::{CancelToken, JobInput, OpContext};
use ablate_spec::{Params, Value};

use ablate_report::plot::check::{count, hex, read_outputs};
use serde_json::json;

use super::data::{Pareto, ParetoFacet, ParetoPoint, Point, Series, XAxis};

use super::draw::{self, LineFigure, ParetoFigure, Spread};
use super::*;

fn pt(x: f64, mean: f64, std: Option<f64>) -> Point {
    Point { x, mean, std }
}

#[test]
fn a_line_figure_draws_one_line_dots_and_error_bars_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let fig = LineFigure {
        legend_title: None,
        title: "acc vs steps by weights".into(),
        x_name: "steps".into(),
        y_name: "acc".into(),
        x_axis: XAxis::Numeric,
        series: vec![
            Series {
                name: Some("shared".into()),
                points: vec![
                    pt(1.0, 0.5, Some(0.1)),
                    pt(2.0, 0.6, None),
                    pt(4.0, 0.7, Some(0.05)),
                ],
            },
            Series {
                name: Some("unshared".into()),
                points: vec![pt(2.0, 0.4, Some(0.2)), pt(4.0, 0.8, None)],
            },
        ],
        log_x: true,
        log_y: false,
        spread: Spread::Bars,
        size: (400, 300),
    };
    draw::save(&fig, dir.path(), "plot").unwrap();
    let svg = read_outputs(dir.path(), (400, 300));
    let (a, b) = (hex(draw::PALETTE[0]), hex(draw::PALETTE[1]));
    // A line and its legend entry per group.
    assert_eq!(count(&svg, "polyline", &format!("stroke=\"{a}\"")), 2);
    assert_eq!(count(&svg, "polyline", &format!("stroke=\"{b}\"")), 2);
    // A filled dot per point.
    assert_eq!(count(&svg, "circle", &format!("fill=\"{a}\"")), 3);
    assert_eq!(count(&svg, "circle", &format!("fill=\"{b}\"")), 2);
    // Three strokes per error bar, only where there is a std.
    assert_eq!(count(&svg, "line", &format!("stroke=\"{a}\"")), 6);
    assert_eq!(count(&svg, "line", &format!("stroke=\"{b}\"")), 3);
    assert!(svg.contains("unshared") && svg.contains("acc vs steps by weights"));
}

#[test]
fn a_categorical_line_figure_labels_its_categories() {
    let dir = tempfile::tempdir().unwrap();
    let fig = LineFigure {
        legend_title: None,
        title: "acc vs act".into(),
        x_name: "act".into(),
        y_name: "acc".into(),
        x_axis: XAxis::Categorical(vec!["tanh".into(), "relu".into()]),
        series: vec![Series {
            name: None,
            points: vec![pt(0.0, 1.0, None), pt(1.0, 2.0, None)],
        }],
        log_x: false,
        log_y: true,
        spread: Spread::Bars,
        size: (320, 240),
    };
    draw::save(&fig, dir.path(), "plot").unwrap();
    let svg = read_outputs(dir.path(), (320, 240));
    // No group: one line, no legend.
    assert_eq!(
        count(
            &svg,
            "polyline",
            &format!("stroke=\"{}\"", hex(draw::PALETTE[0]))
        ),
        1
    );
    assert!(svg.contains("\ntanh\n</text>") && svg.contains("\nrelu\n</text>"));
}

#[test]
fn a_pareto_figure_draws_points_bars_names_rings_and_a_step_line_per_facet() {
    let dir = tempfile::tempdir().unwrap();
    let pp = |group: usize, x: f64, y: f64, sd: Option<f64>| ParetoPoint {
        group,
        x,
        y,
        x_sd: sd,
        y_sd: sd,
    };
    let fig = ParetoFigure {
        title: "oneshot_em vs infill_em by objective, Pareto frontier".into(),
        x_name: "infill_em".into(),
        y_name: "oneshot_em".into(),
        pareto: Pareto {
            groups: vec!["clm".into(), "sc".into(), "ul2".into()],
            labels: vec!["clm".into(), "sc".into(), "ul2".into()],
            legend: String::new(),
            facets: vec![
                ParetoFacet {
                    name: Some("arch=decoder".into()),
                    points: vec![
                        pp(0, 0.1, 0.6, Some(0.05)),
                        pp(1, 0.7, 0.1, Some(0.02)),
                        pp(2, 0.6, 0.5, None),
                    ],
                    frontier: vec![0, 2, 1],
                },
                ParetoFacet {
                    name: Some("arch=encdec".into()),
                    points: vec![pp(1, 0.8, 0.2, None), pp(2, 0.5, 0.1, Some(0.01))],
                    frontier: vec![0],
                },
            ],
        },
        panel_size: (300, 260),
    };
    draw::save(&fig, dir.path(), "plot").unwrap();
    let svg = read_outputs(dir.path(), (600, 32 + 22 + 260));
    let [clm, sc, ul2] = [0, 1, 2].map(|i| hex(draw::PALETTE[i]));
    // A dot per point, in its group's colour across facets.
    assert_eq!(count(&svg, "circle", &format!("fill=\"{clm}\"")), 1);
    assert_eq!(count(&svg, "circle", &format!("fill=\"{sc}\"")), 2);
    assert_eq!(count(&svg, "circle", &format!("fill=\"{ul2}\"")), 2);
    // Two bars of three strokes per point with an sd.
    assert_eq!(count(&svg, "line", &format!("stroke=\"{clm}\"")), 6);
    assert_eq!(count(&svg, "line", &format!("stroke=\"{sc}\"")), 6);
    assert_eq!(count(&svg, "line", &format!("stroke=\"{ul2}\"")), 6);
    // A ring per frontier point; a step line only where the frontier has two points or more.
    let frontier = hex(draw::FRONTIER);
    assert_eq!(count(&svg, "circle", &format!("stroke=\"{frontier}\"")), 4);
    assert_eq!(
        count(&svg, "polyline", &format!("stroke=\"{frontier}\"")),
        1
    );
    // Every point is named, and each facet titled.
    assert_eq!(svg.matches("\nul2\n</text>").count(), 2);
    assert!(svg.contains("arch=encdec") && svg.contains("Pareto frontier"));
}

fn square_grid(n: i64, shift: f64) -> Vec<(i64, i64, [f64; 2])> {
    let mut g = Vec::new();
    for i in 0..n {
        for j in 0..n {
            g.push((i, j, [i as f64 + shift * j as f64, j as f64]));
        }
    }
    g
}

// ---------------------------------------------------------------------------------------------
// Op-level: entries in a real store, read through an `OpContext`.

fn input(n: u64, labels: &[(&str, Value)]) -> JobInput {
    let key = key_input(n).key();
    JobInput {
        stage: "metric".into(),
        id: format!("metric[{n}]"),
        op: "eval.metric".into(),
        key,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

fn key_input(n: u64) -> KeyInput {
    KeyInput {
        scheme: HASH_SCHEME,
        op: "eval.metric".into(),
        op_version: 1,
        params: BTreeMap::from([("n".to_owned(), json!(n))]),
        inputs: Vec::new(),
        deps: Vec::new(),
    }
}

/// Commits the entry of input `n` with these final metrics and Parquet files.
fn entry(store: &Store, n: u64, metrics: &[(&str, f64)], files: &[(&str, &Table)]) -> InstanceKey {
    let metrics = metrics.iter().map(|(k, v)| Metric::new(*k, *v)).collect();
    entry_with(store, n, metrics, files)
}

/// Commits the entry of input `n` with these metrics (final or stepped) and Parquet files.
fn entry_with(
    store: &Store,
    n: u64,
    metrics: Vec<Metric>,
    files: &[(&str, &Table)],
) -> InstanceKey {
    entry_as(store, n, metrics, files, Default::default())
}

fn entry_as(
    store: &Store,
    n: u64,
    metrics: Vec<Metric>,
    files: &[(&str, &Table)],
    status: ablate_cache::EntryStatus,
) -> InstanceKey {
    let ki = key_input(n);
    let key = ki.key();
    let tmp = store.begin(&key).unwrap();
    for (name, t) in files {
        ablate_results::write_table(&tmp.dir().join(name), t).unwrap();
    }
    tmp.commit(Manifest {
        format: 0,
        key,
        input: ki,
        origin: Origin {
            pipeline: "p".into(),
            stage: "metric".into(),
            label: String::new(),
        },
        outputs: Vec::new(),
        metrics,
        publish: Vec::new(),
        started_at_us: 0,
        seconds: 0.0,
        device: "cpu".into(),
        host: "test".into(),
        ablate_version: "0".into(),
        status,
        checksum: None,
    })
    .unwrap();
    key
}

/// Runs `report.plot` with `params` over `inputs` (whose entries are in `store`).
fn run_op(
    store: &Store,
    root: &Path,
    inputs: Vec<JobInput>,
    params: Value,
) -> Result<OpOutput, OpError> {
    with_ctx(store, root, inputs, params, |ctx| Plot::new().run(ctx))
}

/// Calls `f` with the context `report.plot` would run in, its output dir made empty.
fn with_ctx<R>(
    store: &Store,
    root: &Path,
    inputs: Vec<JobInput>,
    params: Value,
    f: impl FnOnce(&OpContext<'_>) -> R,
) -> R {
    let mut p: Params = Plot::new()
        .schema
        .params
        .iter()
        .filter_map(|s| Some((s.name.to_owned(), s.default.clone()?)))
        .collect();
    for (k, v) in params.as_object().unwrap() {
        p.insert(k.clone(), v.clone());
    }
    let job = crate::testutil::job("report.plot", p, inputs, "cpu");
    let out = root.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let cancel = CancelToken::new();
    let progress = |_: ablate_run::Progress| {};
    let ctx = OpContext::new(&job, &out, store, root, 1, &progress, &cancel);
    f(&ctx)
}

#[test]
fn the_line_op_averages_over_seeds_and_honours_select() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("cache")).unwrap();
    let mut inputs = Vec::new();
    let mut n = 0;
    for w in ["shared", "unshared"] {
        for steps in [1, 2, 4] {
            for seed in [0, 1] {
                let acc = 0.5 + 0.1 * steps as f64 + 0.01 * seed as f64;
                entry(&store, n, &[("acc", acc)], &[]);
                inputs.push(input(
                    n,
                    &[
                        ("weights", json!(w)),
                        ("steps", json!(steps)),
                        ("seed", json!(seed)),
                    ],
                ));
                n += 1;
            }
        }
    }
    let out = run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "line", "x": "steps", "y": "acc", "group": "weights"}),
    )
    .unwrap();
    assert_eq!(out.publish, ["plot.svg", "plot.png"]);
    assert!(out.metrics.is_empty());
    let svg = read_outputs(&root.path().join("out"), LINE_SIZE);
    assert!(svg.contains("acc vs steps by weights"));
    for c in &draw::PALETTE[..2] {
        let c = hex(*c);
        assert_eq!(count(&svg, "circle", &format!("fill=\"{c}\"")), 3);
        // Two seeds per point: every point has an error bar.
        assert_eq!(count(&svg, "line", &format!("stroke=\"{c}\"")), 9);
    }

    // One seed selected: one observation per point, no error bars, one group.
    run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "line", "x": "steps", "y": "acc", "group": "weights",
               "select": {"seed": 0, "weights": "shared"}}),
    )
    .unwrap();
    let svg = read_outputs(&root.path().join("out"), LINE_SIZE);
    assert_eq!(count(&svg, "circle", ""), 3);
    // (Mesh lines are `<line>`s too, in grey.)
    let a = hex(draw::PALETTE[0]);
    assert_eq!(count(&svg, "line", &format!("stroke=\"{a}\"")), 0);

    let err = run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "line", "x": "steps", "y": "f1_score"}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no input has the metric `f1_score`; the inputs have: `acc`"
    );
    let err = run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "line", "x": "steps", "y": "acc", "select": {"seed": 7}}),
    )
    .unwrap_err();
    // #21 (QA §13): the message named the label keys only, not what `select` looked for and
    // what the inputs have (after a `--matrix` override swept other values).
    assert_eq!(
        err.to_string(),
        "`select` matches none of the 12 inputs: it wants `seed=7`; the inputs have `seed=0,1`"
    );
    let err = run_op(
        &store,
        root.path(),
        inputs,
        json!({"kind": "line", "x": "steps", "y": "acc",
               "select": {"seed": 0, "hidden": 64}}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`select` matches none of the 12 inputs: it wants `hidden=64`, `seed=0`; the inputs have \
         `seed=0,1`; no input has the label `hidden` (their labels: `seed`, `steps`, `weights`)"
    );
}

#[test]
fn the_pareto_op_averages_seeds_per_group_and_facets() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("cache")).unwrap();
    let mut inputs = Vec::new();
    let mut n = 0;
    for arch in ["decoder", "encdec"] {
        for (objective, infill, oneshot, nll) in [
            ("clm", 0.1, 0.6, 2.0),
            ("sc", 0.7, 0.1, 2.5),
            ("ul2", 0.6, 0.5, 2.1),
            ("plm", 0.2, 0.3, 2.2),
        ] {
            for seed in [0, 1] {
                let s = 0.01 * seed as f64;
                entry(
                    &store,
                    n,
                    &[
                        ("infill_em", infill + s),
                        ("oneshot_em", oneshot + s),
                        ("val_nll", nll + s),
                    ],
                    &[],
                );
                inputs.push(input(
                    n,
                    &[
                        ("objective", json!(objective)),
                        ("arch", json!(arch)),
                        ("seed", json!(seed)),
                    ],
                ));
                n += 1;
            }
        }
    }
    let params = json!({"kind": "pareto", "x": "infill_em", "y": "oneshot_em",
                        "group": ["objective"], "facet": "arch"});
    let out = run_op(&store, root.path(), inputs.clone(), params).unwrap();
    assert_eq!(out.publish, ["plot.svg", "plot.png"]);
    // The title, a line saying what the point labels are, the facets' titles, the panels.
    let size = (2 * PARETO_PANEL.0, 32 + 20 + 22 + PARETO_PANEL.1);
    let svg = read_outputs(&root.path().join("out"), size);
    assert!(svg.contains("oneshot_em vs infill_em by objective, Pareto frontier"));
    assert!(svg.contains("labels: objective"));
    assert!(svg.contains("infill_em (higher is better →)"));
    // Four objectives in two facets; plm (0.2, 0.3) is dominated by ul2 (0.6, 0.5): three
    // frontier points per facet.
    for i in 0..4 {
        let c = hex(draw::PALETTE[i]);
        assert_eq!(count(&svg, "circle", &format!("fill=\"{c}\"")), 2);
    }
    let frontier = hex(draw::FRONTIER);
    assert_eq!(count(&svg, "circle", &format!("stroke=\"{frontier}\"")), 6);
    assert_eq!(
        count(&svg, "polyline", &format!("stroke=\"{frontier}\"")),
        2
    );

    // val_nll lower is better: against infill_em, clm (0.1, 2.0) has the best nll and sc the
    // best infilling; ul2 (0.6, 2.1) is on the frontier, plm (0.2, 2.2) is not.
    let params = json!({"kind": "pareto", "x": "infill_em", "y": "val_nll",
                        "group": "objective", "lower_is_better": ["val_nll"],
                        "select": {"arch": "decoder"}});
    run_op(&store, root.path(), inputs.clone(), params).unwrap();
    let svg = read_outputs(
        &root.path().join("out"),
        (PARETO_PANEL.0, 32 + 20 + 22 + PARETO_PANEL.1),
    );
    assert_eq!(count(&svg, "circle", &format!("stroke=\"{frontier}\"")), 3);
    assert!(svg.contains("val_nll (← lower is better)"));

    let err = |params: Value| {
        run_op(&store, root.path(), inputs.clone(), params)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(json!({"kind": "pareto", "x": "infill_em", "y": "oneshot_em"})),
        "`kind: pareto` needs `x` and `y` (metrics) and `group` (a label or a list of labels)"
    );
    assert_eq!(
        err(
            json!({"kind": "pareto", "x": "infill_em", "y": "oneshot_em", "group": "objective",
                   "lower_is_better": ["loss"]})
        ),
        "`lower_is_better` lists `loss`, which is neither `x` (`infill_em`) nor `y` (`oneshot_em`)"
    );
    assert_eq!(
        err(
            json!({"kind": "pareto", "x": "infill_em", "y": "oneshot_em", "group": "objective",
                   "log_x": true})
        ),
        "`log_x` applies to `line` and `curve`, not `kind: pareto`"
    );
    assert_eq!(
        err(json!({"kind": "line", "x": "seed", "y": "infill_em", "facet": "arch"})),
        "`facet` applies to `pareto`, not `kind: line`"
    );
    // #21: several `group` labels make a line per combination, the legend titled by them.
    run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "line", "x": "seed", "y": "infill_em", "group": ["arch", "objective"]}),
    )
    .unwrap();
    let svg = read_outputs(&root.path().join("out"), LINE_SIZE);
    assert!(svg.contains("arch, objective:"), "the legend's title");
    assert!(svg.contains("decoder, clm"), "a line's name");
}

/// 2 learning rates × 3 seeds logging `loss` at steps 1–4 (seed 2 of `lr=0.01` stops after
/// step 3) and a final `acc`: loss = base / step + 0.1 · seed, base 1 for `lr=0.1` and 2 for
/// `lr=0.01`.
fn curve_inputs(store: &Store) -> Vec<JobInput> {
    let mut inputs = Vec::new();
    let mut n = 0;
    for (lr, base) in [(0.1, 1.0), (0.01, 2.0)] {
        for seed in 0..3_u64 {
            let last = if lr == 0.01 && seed == 2 { 3 } else { 4 };
            let mut metrics: Vec<Metric> = (1..=last)
                .map(|step| Metric::at_step("loss", step, base / step as f64 + 0.1 * seed as f64))
                .collect();
            metrics.push(Metric::new("acc", 0.9));
            entry_with(store, n, metrics, &[]);
            inputs.push(input(n, &[("lr", json!(lr)), ("seed", json!(seed))]));
            n += 1;
        }
    }
    inputs
}

fn curve_figure_of(store: &Store, root: &Path, inputs: Vec<JobInput>, params: Value) -> LineFigure {
    with_ctx(store, root, inputs, params, |ctx| {
        let p: PlotParams = typed("report.plot", ctx.job.params()).unwrap();
        let chosen = choose(ctx, p.select.as_ref(), true).unwrap();
        curve_figure(&chosen.entries, &p, &chosen.note()).unwrap()
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn the_curve_op_averages_seeds_at_each_step_per_group() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("cache")).unwrap();
    let inputs = curve_inputs(&store);
    let params = json!({"kind": "curve", "y": "loss", "group": "lr"});
    let fig = curve_figure_of(&store, root.path(), inputs.clone(), params);
    assert_eq!(fig.title, "loss vs step by lr");
    assert_eq!((fig.x_name.as_str(), fig.y_name.as_str()), ("step", "loss"));
    assert_eq!(fig.x_axis, XAxis::Numeric);
    assert_eq!(fig.spread, Spread::Band);
    // Groups in numeric order of `lr`.
    let names: Vec<_> = fig.series.iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(names, [Some("0.01"), Some("0.1")]);
    for (s, base) in fig.series.iter().zip([2.0, 1.0]) {
        let steps: Vec<f64> = s.points.iter().map(|p| p.x).collect();
        assert_eq!(steps, [1.0, 2.0, 3.0, 4.0]);
        for p in &s.points {
            let (mean, sd) = if base == 2.0 && p.x == 4.0 {
                // Only seeds 0 and 1 logged step 4: mean of {0.5, 0.6}, sd √0.005.
                (0.55, 0.005_f64.sqrt())
            } else {
                // Seeds add 0, 0.1, 0.2: mean +0.1, sample sd 0.1.
                (base / p.x + 0.1, 0.1)
            };
            assert!(close(p.mean, mean), "{s:?}");
            assert!(close(p.std.unwrap(), sd), "{s:?}");
        }
    }

    // Without `group`, one line over all six inputs; `select` narrows them.
    let fig = curve_figure_of(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "curve", "y": "loss", "select": {"seed": 0}}),
    );
    assert_eq!(fig.title, "loss vs step");
    assert_eq!(fig.series.len(), 1);
    assert_eq!(fig.series[0].name, None);
    let pts: Vec<(f64, f64)> = fig.series[0].points.iter().map(|p| (p.x, p.mean)).collect();
    assert_eq!(pts, [(1.0, 1.5), (2.0, 0.75), (3.0, 0.5), (4.0, 0.375)]);

    // Written and published like `line`: a band, a line and a dot per step for each group.
    let out = run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "curve", "y": "loss", "group": "lr", "log_y": true}),
    )
    .unwrap();
    assert_eq!(out.publish, ["plot.svg", "plot.png"]);
    assert!(out.metrics.is_empty());
    let svg = read_outputs(&root.path().join("out"), LINE_SIZE);
    assert!(svg.contains("loss vs step by lr") && svg.contains("\nstep\n</text>"));
    for c in &draw::PALETTE[..2] {
        let c = hex(*c);
        assert_eq!(count(&svg, "polygon", &format!("fill=\"{c}\"")), 1);
        // The line and its legend entry.
        assert_eq!(count(&svg, "polyline", &format!("stroke=\"{c}\"")), 2);
        assert_eq!(count(&svg, "circle", &format!("fill=\"{c}\"")), 4);
        // No error bars.
        assert_eq!(count(&svg, "line", &format!("stroke=\"{c}\"")), 0);
    }
}

#[test]
fn the_curve_op_names_an_input_without_the_stepped_metric_and_what_it_has() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("cache")).unwrap();
    let mut inputs = curve_inputs(&store);
    let err = |inputs: &[JobInput], params: Value| {
        run_op(&store, root.path(), inputs.to_vec(), params)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&inputs, json!({"kind": "curve", "y": "grad_norm"})),
        "no input has the stepped metric `grad_norm`; the inputs have: `loss`"
    );
    // #21: a typo gets the nearest name.
    assert_eq!(
        err(&inputs, json!({"kind": "curve", "y": "los"})),
        "no input has the stepped metric `los`; did you mean `loss`? (all 6 inputs have it); \
         the inputs have: `loss`"
    );
    assert_eq!(
        err(&inputs, json!({"kind": "curve", "y": "acc"})),
        "input `metric[0]` has no stepped metric `acc` (only a final value); its stepped \
         metrics: `loss`"
    );
    // One input of another stage, without `loss`, fails the plot even though the rest have it.
    entry(&store, 100, &[("acc", 0.5)], &[]);
    inputs.push(input(100, &[("lr", json!(0.1)), ("seed", json!(9))]));
    assert_eq!(
        err(
            &inputs,
            json!({"kind": "curve", "y": "loss", "group": "lr"})
        ),
        "input `metric[100]` has no stepped metric `loss`; it has no stepped metrics (its final \
         metrics: `acc`)"
    );
    inputs.pop();

    assert_eq!(
        err(&inputs, json!({"kind": "curve", "x": "seed", "y": "loss"})),
        "`x` applies to `line` and `pareto`, not `kind: curve`"
    );
    assert_eq!(
        err(
            &inputs,
            json!({"kind": "curve", "y": "loss", "facet": "lr"})
        ),
        "`facet` applies to `pareto`, not `kind: curve`"
    );
    assert_eq!(
        err(&inputs, json!({"kind": "curve", "group": "lr"})),
        "`kind: curve` needs `y` (a metric logged by step)"
    );
    // Several `group` labels: a line per combination (#21).
    let fig = curve_figure_of(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "curve", "y": "loss", "group": ["lr", "seed"]}),
    );
    assert_eq!(fig.series.len(), 6);
    assert_eq!(fig.legend_title.as_deref(), Some("lr, seed"));
    assert_eq!(fig.series[0].name.as_deref(), Some("0.1, 0"));
    assert_eq!(
        err(
            &inputs,
            json!({"kind": "curve", "y": "loss", "group": "wd"})
        ),
        "input `metric[0]` has no label `wd` (its labels: `lr`, `seed`)"
    );
    // Step 0 has no place on a log axis.
    entry_with(&store, 101, vec![Metric::at_step("loss", 0, 1.0)], &[]);
    assert_eq!(
        err(
            &[input(101, &[])],
            json!({"kind": "curve", "y": "loss", "log_x": true})
        ),
        "`log_x` needs positive steps, but `loss` is logged at step 0"
    );
}

#[test]
fn a_long_curve_is_a_band_and_a_line_without_dots() {
    let dir = tempfile::tempdir().unwrap();
    let fig = LineFigure {
        legend_title: None,
        title: "loss vs step".into(),
        x_name: "step".into(),
        y_name: "loss".into(),
        x_axis: XAxis::Numeric,
        series: vec![Series {
            name: None,
            points: (1..=100)
                .map(|s| pt(s as f64, 1.0 / s as f64, Some(0.01)))
                .collect(),
        }],
        log_x: false,
        log_y: true,
        spread: Spread::Band,
        size: (400, 300),
    };
    draw::save(&fig, dir.path(), "plot").unwrap();
    let svg = read_outputs(dir.path(), (400, 300));
    let a = hex(draw::PALETTE[0]);
    assert_eq!(count(&svg, "polygon", &format!("fill=\"{a}\"")), 1);
    assert_eq!(count(&svg, "polyline", &format!("stroke=\"{a}\"")), 1);
    assert_eq!(count(&svg, "circle", ""), 0);
}

/// `layers.parquet` of a 2-D flow over `layers` layers: `n` data points and a 3×3 grid, each
/// layer shearing the previous one.
fn layers_table(layers: i64, n: i64) -> Table {
    let mut cols: [Vec<Option<i64>>; 5] = Default::default();
    let (mut set, mut x0, mut x1) = (Vec::new(), Vec::new(), Vec::new());
    for layer in 0..layers {
        let shear = 0.2 * layer as f64;
        for p in 0..n {
            let (a, b) = (p as f64, (p % 2) as f64);
            for (c, v) in cols.iter_mut().zip([layer, p, p % 2]) {
                c.push(Some(v));
            }
            cols[3].push(None);
            cols[4].push(None);
            set.push("data");
            x0.push(a + shear * b);
            x1.push(b);
        }
        for (k, (gi, gj, x)) in square_grid(3, shear).into_iter().enumerate() {
            cols[0].push(Some(layer));
            cols[1].push(Some(k as i64));
            cols[2].push(None);
            cols[3].push(Some(gi));
            cols[4].push(Some(gj));
            set.push("grid");
            x0.push(x[0]);
            x1.push(x[1]);
        }
    }
    let [layer, point, label, gi, gj] = cols;
    Table::new()
        .with_column("layer", layer)
        .with_column("set", set)
        .with_column("point", point)
        .with_column("label", label)
        .with_column("gi", gi)
        .with_column("gj", gj)
        .with_column("x0", x0)
        .with_column("x1", x1)
}

fn metric_table(layers: i64) -> Table {
    let mut t: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut ints: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for layer in 0..layers {
        for (k, (gi, gj, x)) in square_grid(3, 0.0).into_iter().enumerate() {
            for (name, v) in [
                ("layer", layer),
                ("point", k as i64),
                ("gi", gi),
                ("gj", gj),
            ] {
                ints.entry(name).or_default().push(v);
            }
            let g = if k == 4 {
                [0.0, 0.0, 0.0]
            } else {
                [1.0, 0.1 * gi as f64, 2.0]
            };
            for (name, v) in [
                ("x0", x[0]),
                ("x1", x[1]),
                ("g00", g[0]),
                ("g01", g[1]),
                ("g11", g[2]),
            ] {
                t.entry(name).or_default().push(v);
            }
        }
    }
    let mut table = Table::new();
    for (name, v) in ints {
        table.push_column(name, v);
    }
    for (name, v) in t {
        table.push_column(name, v);
    }
    table
}

#[test]
fn the_panel_ops_read_eval_metric_entries() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("cache")).unwrap();
    // Two inputs of different depths: 4 layers (0..=3) and 7 layers (0..=6).
    let mut inputs = Vec::new();
    for (n, depth) in [(0, 4), (1, 7)] {
        entry(
            &store,
            n,
            &[],
            &[
                ("layers.parquet", &layers_table(depth, 5)),
                ("metric.parquet", &metric_table(depth)),
            ],
        );
        inputs.push(input(n, &[("steps", json!(depth - 1)), ("seed", json!(0))]));
    }
    let out_dir = root.path().join("out");
    let size = (4 * PANEL_SIZE.0, 32 + 2 * (22 + PANEL_SIZE.1));

    run_op(&store, root.path(), inputs.clone(), json!({"kind": "flow"})).unwrap();
    let svg = read_outputs(&out_dir, size);
    // Default layers: 4 per row, 5 data points each.
    assert_eq!(count(&svg, "circle", ""), 2 * 4 * 5);
    // Rows are titled by the labels that differ between them: the steps, not the shared seed.
    assert!(
        svg.contains(">\nsteps=6\n<") && svg.contains("layer 4") && !svg.contains("seed=0"),
        "{svg}"
    );

    run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "grid", "layers": [0, 3], "select": {"steps": 3}}),
    )
    .unwrap();
    let svg = read_outputs(&out_dir, (2 * PANEL_SIZE.0, 32 + 22 + PANEL_SIZE.1));
    let line = format!("stroke=\"{}\"", hex(draw::GRID_LINE));
    assert_eq!(count(&svg, "polyline", &line), 2 * 6);
    assert_eq!(count(&svg, "circle", ""), 2 * 5);

    run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "metric"}),
    )
    .unwrap();
    // Two inputs with one layer each: side by side, one panel row.
    let svg = read_outputs(&out_dir, (2 * PANEL_SIZE.0, 32 + 22 + PANEL_SIZE.1));
    assert!(svg.contains("scaled"));
    let ellipse = format!("stroke=\"{}\"", hex(draw::ELLIPSE));
    assert_eq!(count(&svg, "polyline", &ellipse), 2 * 8);
    let dot = format!("fill=\"{}\"", hex(draw::DEGENERATE));
    assert_eq!(count(&svg, "circle", &dot), 2);

    // Requested layers absent from one input.
    let err = run_op(
        &store,
        root.path(),
        inputs.clone(),
        json!({"kind": "flow", "layers": [5]}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`layers.parquet` of input `metric[0]` has no layer 5 (it has 0, 1, 2, 3)"
    );
    // Line-only params are refused.
    let err = run_op(
        &store,
        root.path(),
        inputs,
        json!({"kind": "grid", "x": "steps"}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`x` applies to `line` and `pareto`, not `kind: grid`"
    );
}

#[test]
fn the_panel_ops_name_the_input_and_file_that_is_missing_or_wrong() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("cache")).unwrap();
    entry(&store, 0, &[("acc", 1.0)], &[]);
    let bad = Table::new().with_column("layer", vec![0_i64]);
    entry(&store, 1, &[], &[("layers.parquet", &bad)]);

    let err = run_op(
        &store,
        root.path(),
        vec![input(0, &[])],
        json!({"kind": "flow"}),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("input `metric[0]` has no `layers.parquet`"),
        "{err}"
    );
    let err = run_op(
        &store,
        root.path(),
        vec![input(0, &[])],
        json!({"kind": "metric"}),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`metric.parquet`"), "{err}");
    let err = run_op(
        &store,
        root.path(),
        vec![input(1, &[])],
        json!({"kind": "grid"}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`layers.parquet` of input `metric[1]` has no column `set`"
    );

    let many: Vec<JobInput> = (0..7).map(|s| input(0, &[("seed", json!(s))])).collect();
    let err = run_op(&store, root.path(), many, json!({"kind": "flow"}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at most 6") && err.contains("`select`"),
        "{err}"
    );
}

#[test]
fn curves_draw_what_early_stopping_pruned_cut_where_it_stopped() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("cache")).unwrap();
    let mut inputs = Vec::new();
    for (n, lr, pruned) in [(0, 0.1, false), (1, 0.01, true)] {
        let steps = if pruned { 2 } else { 4 };
        let metrics = (1..=steps)
            .map(|s| Metric::at_step("loss", s, 1.0 / s as f64))
            .collect();
        let status = if pruned {
            ablate_cache::EntryStatus::Pruned { step: 2 }
        } else {
            ablate_cache::EntryStatus::Done
        };
        entry_as(&store, n, metrics, &[], status);
        inputs.push(input(n, &[("lr", json!(lr)), ("seed", json!(0))]));
    }
    let params = json!({"kind": "curve", "y": "loss", "group": "lr"});
    let fig = curve_figure_of(&store, root.path(), inputs, params);
    assert_eq!(fig.title, "loss vs step by lr (1 pruned early)");
    let lines: Vec<(Option<&str>, usize)> = fig
        .series
        .iter()
        .map(|s| (s.name.as_deref(), s.points.len()))
        .collect();
    assert_eq!(lines, [(Some("0.01 (pruned)"), 2), (Some("0.1"), 4)]);
}
