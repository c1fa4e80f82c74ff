//! Figure tests that need no op: panels drawn from small synthetic tables into a temp dir,
//! checked by counting the SVG elements the data should produce and by reading the PNG header.

use super::super::check::{count, hex, read_outputs};
use super::super::data::{self, MetricPoint};
use super::super::draw::{self, Panel, PanelContent, PanelFigure, PanelRow};
use super::*;

fn square_grid(n: i64, shift: f64) -> Vec<(i64, i64, [f64; 2])> {
    let mut g = Vec::new();
    for i in 0..n {
        for j in 0..n {
            g.push((i, j, [i as f64 + shift * j as f64, j as f64]));
        }
    }
    g
}

#[test]
fn panel_figures_draw_one_element_per_datum() {
    let dir = tempfile::tempdir().unwrap();
    let flow = |n: usize| PanelContent::Flow {
        points: (0..n)
            .map(|k| ([k as f64, (k * k) as f64], Some((k % 3) as i64)))
            .collect(),
    };
    let fig = PanelFigure {
        title: "data at each layer".into(),
        rows: vec![
            PanelRow {
                title: "steps=1".into(),
                panels: vec![
                    Panel {
                        title: "layer 0".into(),
                        content: flow(5),
                    },
                    Panel {
                        title: "layer 1".into(),
                        content: flow(4),
                    },
                ],
            },
            // A shallower row leaves its last cell empty.
            PanelRow {
                title: "steps=2".into(),
                panels: vec![Panel {
                    title: "layer 0".into(),
                    content: flow(3),
                }],
            },
        ],
        panel_size: (160, 140),
    };
    draw::save(&fig, dir.path(), "plot").unwrap();
    let size = (draw::MIN_WIDTH, 32 + 2 * (22 + 140));
    let svg = read_outputs(dir.path(), size);
    assert_eq!(count(&svg, "circle", ""), 12);
    // Classes k % 3 of 5 + 4 + 3 points: class 0 five times, 1 four times, 2 three times.
    for (class, times) in [(0, 5), (1, 4), (2, 3)] {
        let c = hex(draw::class_color(Some(class)));
        assert_eq!(count(&svg, "circle", &format!("fill=\"{c}\"")), times);
    }
    assert!(svg.contains("steps=2"));

    // The deformed grid: a 3×3 grid gives 6 lines, the data faint underneath.
    let grid = square_grid(3, 0.3);
    let fig = PanelFigure {
        title: "deformed grid at each layer".into(),
        rows: vec![PanelRow {
            title: "seed=0".into(),
            panels: vec![Panel {
                title: "layer 2".into(),
                content: PanelContent::Grid {
                    lines: data::grid_lines(&grid),
                    data: vec![[0.5, 0.5], [1.5, 1.0]],
                },
            }],
        }],
        panel_size: (200, 160),
    };
    draw::save(&fig, dir.path(), "plot").unwrap();
    let svg = read_outputs(dir.path(), (draw::MIN_WIDTH, 32 + 22 + 160));
    let line = format!("stroke=\"{}\"", hex(draw::GRID_LINE));
    assert_eq!(count(&svg, "polyline", &line), 6);
    assert_eq!(count(&svg, "circle", ""), 2);

    // Metric ellipses: one outline per positive-definite g, a dot per degenerate one.
    let pts: Vec<MetricPoint> = square_grid(2, 0.0)
        .into_iter()
        .map(|(gi, gj, x)| MetricPoint {
            layer: 0,
            gi,
            gj,
            x,
            g: if (gi, gj) == (1, 1) {
                [1.0, 1.0, 1.0]
            } else {
                [1.0 + gi as f64, 0.2, 2.0]
            },
        })
        .collect();
    let panels = metric_panels("metric[0]", &pts, None).unwrap();
    let fig = PanelFigure {
        title: "metric g".into(),
        rows: vec![PanelRow {
            title: "seed=0".into(),
            panels,
        }],
        panel_size: (200, 160),
    };
    draw::save(&fig, dir.path(), "plot").unwrap();
    let svg = read_outputs(dir.path(), (draw::MIN_WIDTH, 32 + 22 + 160));
    let ellipse = format!("stroke=\"{}\"", hex(draw::ELLIPSE));
    assert_eq!(count(&svg, "polyline", &ellipse), 3);
    let dot = format!("fill=\"{}\"", hex(draw::DEGENERATE));
    assert_eq!(count(&svg, "circle", &dot), 1);
}

fn input(
    id: &str,
    seed: i64,
    lr: f64,
    metrics: &[(&str, Option<u64>, f64)],
    pruned: bool,
) -> Input {
    Input {
        id: id.into(),
        labels: vec![
            ("lr".into(), Value::from(lr)),
            ("seed".into(), Value::from(seed)),
        ],
        metrics: metrics
            .iter()
            .map(|(n, s, v)| ((*n).to_owned(), *s, *v))
            .collect(),
        pruned,
    }
}

fn spec(kind: Kind) -> Spec {
    Spec {
        kind,
        title: None,
        x: None,
        y: None,
        group: None,
        facet: None,
        lower_is_better: Vec::new(),
        log_x: false,
        log_y: false,
        layers: None,
    }
}

#[test]
fn figures_are_built_from_plain_inputs_without_an_op() {
    // A line reads final values only (the last one logged), averaged over the seeds.
    let inputs = [
        input(
            "t[0]",
            0,
            0.1,
            &[
                ("acc", Some(1), 0.2),
                ("acc", None, 0.5),
                ("acc", None, 0.7),
            ],
            false,
        ),
        input("t[1]", 1, 0.1, &[("acc", None, 0.9)], false),
    ];
    let line = Spec {
        x: Some("lr".into()),
        y: Some("acc".into()),
        ..spec(Kind::Line)
    };
    let fig = line_figure(&inputs, &line, &title_note(0, &["failed"])).unwrap();
    assert_eq!(fig.title, "acc vs lr (left out: 1 failed)");
    assert_eq!(fig.size, LINE_SIZE);
    assert!((fig.series[0].points[0].mean - 0.8).abs() < 1e-12);

    // A setting its kind does not use is refused, naming the kinds that use it.
    let wrong = Spec {
        facet: Some("seed".into()),
        ..line.clone()
    };
    assert_eq!(
        wrong.check_applicable().unwrap_err(),
        "`facet` applies to `pareto`, not `kind: line`"
    );

    // A curve's line whose inputs were all pruned says so; one that has a whole run does not.
    let inputs = [
        input(
            "t[0]",
            0,
            0.1,
            &[("loss", Some(1), 1.0), ("loss", Some(2), 0.5)],
            false,
        ),
        input("t[1]", 0, 0.3, &[("loss", Some(1), 2.0)], true),
        input("t[2]", 1, 0.3, &[("loss", Some(1), 2.5)], true),
    ];
    let curve = Spec {
        y: Some("loss".into()),
        group: Some(vec!["lr".into()]),
        ..spec(Kind::Curve)
    };
    let fig = curve_figure(&inputs, &curve, &title_note(2, &[])).unwrap();
    assert_eq!(fig.title, "loss vs step by lr (2 pruned early)");
    let names: Vec<_> = fig.series.iter().map(|s| s.name.clone().unwrap()).collect();
    assert_eq!(names, ["0.1", "0.3 (pruned)"]);

    // A metric no input logs by step names what they have.
    let acc = Spec {
        y: Some("acc".into()),
        ..curve
    };
    let Err(err) = curve_figure(&inputs, &acc, "") else {
        panic!("a curve of a metric no input logs by step")
    };
    assert!(
        err.starts_with("no input has the stepped metric `acc`"),
        "{err}"
    );
}
