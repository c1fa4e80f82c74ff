//! Loading pipeline files end to end against a small fake op catalog.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ablate_spec::{
    Device, Diagnostics, MAX_NAME_BYTES, Matrix, OpCatalog, OpSchema, Override, Overrides,
    ParamSpec, ParamType, Pipeline, Resources, SourceFile, Span, StageName, Value, did_you_mean,
    load, load_file,
};
use serde_json::json;

struct Catalog(Vec<OpSchema>);

impl OpCatalog for Catalog {
    fn schema(&self, op: &str) -> Option<&OpSchema> {
        self.0.iter().find(|s| s.name == op)
    }
    fn op_names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.name).collect()
    }
}

fn op(
    name: &'static str,
    version: u32,
    needs: (usize, Option<usize>),
    params: Vec<ParamSpec>,
) -> OpSchema {
    OpSchema {
        name,
        version,
        summary: "",
        params,
        gathers: false,
        free_params: false,
        inputs_by_name: false,
        on_device: false,
        needs,
    }
}

fn catalog() -> Catalog {
    let seed = || {
        ParamSpec::with_default(
            "seed",
            ParamType::non_negative_int(),
            json!(0),
            "random seed",
        )
    };
    Catalog(vec![
        op(
            "data.toy2d",
            1,
            (0, Some(0)),
            vec![
                ParamSpec::required(
                    "kind",
                    ParamType::Enum(&["spirals", "moons", "circles"]),
                    "which data set",
                ),
                ParamSpec::with_default(
                    "n_train",
                    ParamType::positive_int(),
                    json!(1000),
                    "training points",
                ),
                ParamSpec::with_default(
                    "noise",
                    ParamType::Float {
                        min: 0.0,
                        max: f64::MAX,
                    },
                    json!(0.05),
                    "noise",
                ),
                seed(),
            ],
        ),
        op(
            "train.flow",
            3,
            (1, Some(1)),
            vec![
                ParamSpec::required(
                    "weights",
                    ParamType::Enum(&["shared", "unshared"]),
                    "weight sharing",
                ),
                ParamSpec::with_default(
                    "steps",
                    ParamType::positive_int(),
                    json!(4),
                    "N, with h = 1/N",
                ),
                ParamSpec::with_default(
                    "lr",
                    ParamType::positive_float(),
                    json!(0.01),
                    "learning rate",
                ),
                seed(),
            ],
        ),
        OpSchema {
            gathers: true,
            ..op(
                "report.table",
                2,
                (1, None),
                vec![ParamSpec::with_default(
                    "rows",
                    ParamType::list(ParamType::Str),
                    json!([]),
                    "row keys",
                )],
            )
        },
        OpSchema {
            free_params: true,
            inputs_by_name: true,
            on_device: false,
            ..op(
                "cmd",
                1,
                (0, None),
                vec![
                    ParamSpec::required("run", ParamType::Str, "the command"),
                    ParamSpec::with_default(
                        "deps",
                        ParamType::list(ParamType::Str),
                        json!([]),
                        "hashed files",
                    ),
                ],
            )
        },
    ])
}

fn fixture(path: &str) -> PathBuf {
    Path::new("tests/fixtures").join(path)
}

fn load_ok(path: &str, overrides: &Overrides) -> Pipeline {
    load_file(&fixture(path), overrides, &catalog()).unwrap_or_else(|d| panic!("{d}"))
}

fn load_err(path: &str, overrides: &Overrides) -> Diagnostics {
    match load_file(&fixture(path), overrides, &catalog()) {
        Ok(_) => panic!("{path} loaded"),
        Err(d) => d,
    }
}

fn load_text(text: &str, overrides: &Overrides) -> Result<Pipeline, Diagnostics> {
    load(SourceFile::new("test.yaml", text), overrides, &catalog())
}

fn params(value: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(value).unwrap()
}

fn overrides(sets: &[&str], matrices: &[&str]) -> Overrides {
    Overrides::parse(sets.iter().copied(), matrices.iter().copied()).unwrap()
}

/// (line, col, message) of every item, to compare with what a file should report.
fn summary(d: &Diagnostics) -> Vec<(u32, u32, String)> {
    d.items
        .iter()
        .map(|i| {
            let s = i.span.unwrap_or(Span {
                line: 0,
                col: 0,
                len: 0,
            });
            (s.line, s.col, i.message.clone())
        })
        .collect()
}

#[test]
fn a_valid_file_gives_the_exact_pipeline() {
    let p = load_ok("valid/ablation.yaml", &Overrides::default());
    assert_eq!(p.name, "ablation");
    assert_eq!(
        p.description.as_deref(),
        Some("weight sharing x step count")
    );
    assert_eq!(p.vars, params(json!({"width": 16, "tag": "v1"})));
    assert_eq!(p.source.path, fixture("valid/ablation.yaml"));
    let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["spirals", "resnet", "sweep", "table", "mine"]);

    let spirals = p.stage("spirals").unwrap();
    assert_eq!(spirals.op, "data.toy2d");
    assert_eq!(spirals.op_version, 1);
    assert_eq!(spirals.description, None);
    // Op defaults < `defaults:` < `params:`; `noise: 0` is normalised to a float.
    assert_eq!(
        spirals.params,
        params(json!({"kind": "spirals", "n_train": 200, "noise": 0.0, "seed": 7}))
    );
    assert!(spirals.params["noise"].is_f64());
    assert!(spirals.needs.is_empty());
    assert_eq!(spirals.needs_span, None);
    assert!(spirals.matrix.is_empty());
    assert_eq!(spirals.matrix.expand(), vec![BTreeMap::new()]);
    assert!(!spirals.gather);
    assert_eq!(
        spirals.resources,
        Resources {
            cpus: 2.0,
            gpus: 0.0,
            mem_gb: 0.0
        }
    );
    assert_eq!(spirals.retries, 1);
    assert_eq!(spirals.device, Device::Cpu);
    assert_eq!(
        spirals.span,
        Span {
            line: 6,
            col: 3,
            len: 7
        }
    );

    let resnet = p.stage("resnet").unwrap();
    assert_eq!(resnet.op_version, 3);
    assert_eq!(resnet.needs, [StageName::new("spirals")]);
    assert_eq!(
        resnet.needs_span,
        Some(Span {
            line: 11,
            col: 12,
            len: 7
        })
    );
    // Matrix keys are not params; `lr: 1` is the float 1.0.
    assert_eq!(resnet.params, params(json!({"lr": 1.0, "seed": 7})));
    assert_eq!(
        resnet.matrix,
        Matrix {
            axes: vec![
                ("weights".into(), vec![json!("shared"), json!("unshared")]),
                ("steps".into(), vec![json!(1), json!(2), json!(4)]),
            ],
            include: vec![
                params(json!({"weights": "shared", "lr": 0.1})),
                params(json!({"weights": "unshared", "steps": 8}))
            ],
            exclude: vec![params(json!({"weights": "unshared", "steps": 1}))],
            search: None,
        }
    );
    // By hand: 2 x 3 = 6, minus (unshared, 1) = 5; the first include adds lr to the three
    // shared combinations; the second agrees with none (no steps 8) and is appended.
    assert_eq!(
        resnet.matrix.expand(),
        vec![
            params(json!({"weights": "shared", "steps": 1, "lr": 0.1})),
            params(json!({"weights": "shared", "steps": 2, "lr": 0.1})),
            params(json!({"weights": "shared", "steps": 4, "lr": 0.1})),
            params(json!({"weights": "unshared", "steps": 2})),
            params(json!({"weights": "unshared", "steps": 4})),
            params(json!({"weights": "unshared", "steps": 8})),
        ]
    );
    assert_eq!(
        resnet.resources,
        Resources {
            cpus: 2.0,
            gpus: 0.5,
            mem_gb: 0.0
        }
    );
    assert_eq!(resnet.retries, 0);
    assert_eq!(resnet.device, Device::Cuda(Some(1)));
    assert!(!resnet.gather);

    // The appended `{steps: 8}` omits the `seed` axis, so it gets seed's fallback (defaults: 7).
    let sweep = p.stage("sweep").unwrap();
    assert_eq!(
        sweep.description.as_deref(),
        Some("an appended include takes the fallback of the axis it omits")
    );
    assert_eq!(
        sweep.params,
        params(json!({"weights": "shared", "lr": 0.01}))
    );
    assert_eq!(
        sweep.matrix.include,
        vec![params(json!({"steps": 8, "seed": 7}))]
    );
    assert_eq!(
        sweep.matrix.expand(),
        vec![
            params(json!({"steps": 2, "seed": 0})),
            params(json!({"steps": 2, "seed": 1})),
            params(json!({"steps": 4, "seed": 0})),
            params(json!({"steps": 4, "seed": 1})),
            params(json!({"steps": 8, "seed": 7})),
        ]
    );

    let table = p.stage("table").unwrap();
    assert!(table.gather, "report ops gather");
    assert_eq!(
        table.needs,
        [StageName::new("resnet"), StageName::new("sweep")]
    );
    assert_eq!(table.params, params(json!({"rows": ["weights", "v1"]})));

    // `cmd` has free params; a whole-string reference keeps the variable's type.
    let mine = p.stage("mine").unwrap();
    assert!(mine.gather, "gather: true");
    assert_eq!(
        mine.params,
        params(json!({
            "run": "python probe.py --width 16 --in {in.resnet} ${HOME}",
            "deps": [],
            "width": 16,
        }))
    );
    assert_eq!(
        mine.matrix.axes,
        vec![("alpha".to_string(), vec![json!(1), json!(2.5)])]
    );
    assert_eq!(
        mine.needs,
        [StageName::new("spirals"), StageName::new("resnet")]
    );
}

#[test]
fn every_problem_in_a_file_is_reported_at_its_place() {
    let d = load_err("invalid/many.yaml", &Overrides::default());
    let expected: Vec<(u32, u32, &str)> = vec![
        (2, 1, "unknown key `stagse` in the pipeline"),
        // `parms` is reported once: not also as a missing `kind`.
        (8, 5, "unknown key `parms` in stage `spirals`"),
        (10, 9, "unknown op `trian.flow` in stage `resnet`"),
        (
            11,
            13,
            "unknown stage `spirls` in `needs` of stage `resnet`",
        ),
        (
            16,
            7,
            "parameter `weights` of stage `train` is set in both `params` and `matrix`",
        ),
        (
            17,
            14,
            "parameter `steps` of op `train.flow` expects an integer ≥ 1, found a string `four`",
        ),
        (
            18,
            11,
            "parameter `lr` of op `train.flow` expects a positive number, found a non-finite number `.nan`",
        ),
        (19, 13, "unknown variable `widht` in `${vars.widht}`"),
        (
            22,
            17,
            "`exclude` entry of stage `train` uses `lr`, which is not a matrix axis",
        ),
        (26, 31, "unclosed `${` in `${vars.width`"),
        (27, 3, "stage `mine`: op `cmd` needs parameter `run`"),
        (
            32,
            12,
            "op `data.toy2d` takes no inputs, but `needs` of stage `moons` lists 1",
        ),
        (
            33,
            14,
            "`retries` of stage `moons` expects an integer ≥ 0, found a string `two`",
        ),
        (
            34,
            35,
            "parameter `noise` of op `data.toy2d` expects a number ≥ 0, found a list",
        ),
    ];
    let expected: Vec<(u32, u32, String)> = expected
        .into_iter()
        .map(|(l, c, m)| (l, c, m.to_owned()))
        .collect();
    assert_eq!(summary(&d), expected, "\n{d}");

    let hint = |line: u32| {
        d.items
            .iter()
            .find(|i| i.span.unwrap().line == line)
            .unwrap()
            .help
            .as_deref()
    };
    assert_eq!(hint(2), Some("did you mean `stages`?"));
    assert_eq!(hint(8), Some("did you mean `params`?"));
    assert_eq!(hint(10), Some("did you mean `train.flow`?"));
    assert_eq!(hint(11), Some("did you mean `spirals`?"));
    assert_eq!(hint(19), Some("did you mean `width`?"));
    assert!(hint(26).unwrap().contains("`${vars.NAME}`"));
    assert!(d.has_errors());
}

#[test]
fn matrix_and_attribute_problems() {
    let d = load_err("invalid/matrix.yaml", &Overrides::default());
    let expected: Vec<(u32, u32, &str)> = vec![
        (
            2,
            13,
            "`defaults` sets `seeed`, but no op in this pipeline has such a parameter",
        ),
        (7, 13, "matrix axis `kind` of stage `data` has no values"),
        (
            8,
            25,
            "duplicate value `10` in matrix axis `n_train` of stage `data`",
        ),
        (
            9,
            14,
            "matrix axis `noise` of stage `data` expects a list of values, found a number `0.1`",
        ),
        (10, 15, "empty `include` entry in stage `data`"),
        (
            10,
            27,
            "parameter `kind` of op `data.toy2d` expects one of `spirals`, `moons`, `circles`, found a string `moon`",
        ),
        (
            11,
            3,
            "the matrix of stage `train` expands to no combinations",
        ),
        (
            13,
            19,
            "stage `data` is listed twice in `needs` of stage `train`",
        ),
        (
            16,
            3,
            "op `report.table` takes at least 1 input, but stage `table` has no `needs`",
        ),
        (
            18,
            25,
            "parameter `rows` of op `report.table` expects a list of strings, found an integer `3` at `rows[1]`",
        ),
        (21, 12, "stage `mine` needs itself"),
        (
            22,
            13,
            "invalid `device` of stage `mine`: expected `cpu`, `cuda` or `cuda:N`, found `gpu`",
        ),
        (
            23,
            24,
            "`resources.cpus` of stage `mine` expects a number > 0, found an integer `0`",
        ),
        (23, 27, "unknown key `gpu` in `resources` of stage `mine`"),
        (
            24,
            13,
            "`gather` of stage `mine` expects a boolean, found a string `yes`",
        ),
        (25, 20, "`${env.HOME}` is not a variable reference"),
    ];
    let expected: Vec<(u32, u32, String)> = expected
        .into_iter()
        .map(|(l, c, m)| (l, c, m.to_owned()))
        .collect();
    assert_eq!(summary(&d), expected, "\n{d}");
}

/// Each invalid fixture's rendered errors, compared with `NAME.stderr` next to it. Run with
/// `UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate change, then review the diff.
#[test]
fn rendered_errors_match_their_snapshots() {
    let dir = fixture("invalid");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 5);
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut mismatched = Vec::new();
    for path in fixtures {
        let rendered = match load_file(&path, &Overrides::default(), &catalog()) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(d) => format!("{d}\n"),
        };
        let snapshot = path.with_extension("stderr");
        if update {
            std::fs::write(&snapshot, &rendered).unwrap();
        } else if std::fs::read_to_string(&snapshot).ok().as_deref() != Some(rendered.as_str()) {
            mismatched.push(format!("{}:\n{rendered}", snapshot.display()));
        }
    }
    assert!(
        mismatched.is_empty(),
        "snapshots differ (UPDATE_SNAPSHOTS=1 to accept):\n{}",
        mismatched.join("\n")
    );
}

#[test]
fn the_style_guide_example_renders_exactly() {
    let d = load_err("invalid/stagse.yaml", &Overrides::default());
    assert_eq!(
        d.to_string(),
        "error: unknown key `stagse` in the pipeline
  --> tests/fixtures/invalid/stagse.yaml:3:1
   |
 3 | stagse:
   | ^^^^^^ unknown key
   |
   = hint: did you mean `stages`?"
    );
}

#[test]
fn carets_cover_the_value_and_labels_name_the_expected_type() {
    let text = "name: x\nstages:\n  t:\n    op: train.flow\n    needs: [d]\n    params: { weights: shared, steps: four }\n  d: { op: data.toy2d, params: { kind: moons } }\n";
    let d = load_text(text, &Overrides::default()).unwrap_err();
    assert_eq!(
        d.to_string(),
        "error: parameter `steps` of op `train.flow` expects an integer ≥ 1, found a string `four`
  --> test.yaml:6:39
   |
 6 |     params: { weights: shared, steps: four }
   |                                       ^^^^ expected an integer ≥ 1"
    );
}

#[test]
fn syntax_errors_stop_at_the_first() {
    let d = load_err("invalid/syntax.yaml", &Overrides::default());
    assert_eq!(d.items.len(), 1);
    assert!(d.items[0].message.starts_with("invalid YAML: "), "{d}");
    let d = load_err("invalid/duplicate.yaml", &Overrides::default());
    assert_eq!(summary(&d), vec![(4, 3, "duplicate key `a`".to_owned())]);
}

#[test]
fn wrong_top_level_types_name_the_expected_type() {
    let d = load_text(
        "name: [x]\nstages: [a, b]\nvars: 3\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        summary(&d),
        vec![
            (1, 7, "`name` expects a string, found a list".to_owned()),
            (
                2,
                9,
                "`stages` expects a map of stages, found a list".to_owned()
            ),
            (
                3,
                7,
                "`vars` expects a map of variables, found an integer `3`".to_owned()
            ),
        ]
    );
    let d = load_text("- a\n", &Overrides::default()).unwrap_err();
    assert_eq!(
        d.items[0].message,
        "a pipeline file expects a map with `name` and `stages`, found a list"
    );
    let d = load_text("name: ../x\nstages: {}\n", &Overrides::default()).unwrap_err();
    assert_eq!(
        summary(&d),
        vec![
            (1, 7, "invalid pipeline name `../x`".to_owned()),
            (2, 1, "the pipeline has no stages".to_owned()),
        ]
    );
    let d = load_text(
        "name: x\nstages:\n  a b: { op: cmd, params: { run: ls } }\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        summary(&d),
        vec![(3, 3, "invalid stage name `a b`".to_owned())]
    );
}

#[test]
fn an_unreadable_file_is_one_diagnostic_without_a_place() {
    let d = load_err("no/such/file.yaml", &Overrides::default());
    assert_eq!(d.items.len(), 1);
    assert!(d.source.is_none() && d.items[0].span.is_none());
    assert!(
        d.items[0]
            .message
            .starts_with("failed to read `tests/fixtures/no/such/file.yaml`: "),
        "{d}"
    );
}

const SMALL: &str = "\
name: small
vars: { width: 16 }
stages:
  data:
    op: data.toy2d
    params: { kind: spirals }
  resnet:
    op: train.flow
    needs: data
    matrix: { weights: [shared, unshared], steps: [1, 2] }
    exclude: [{ weights: unshared, steps: 1 }]
    params: { lr: 0.5 }
";

#[test]
fn set_overrides_are_parsed_as_yaml_scalars_and_type_checked() {
    let o = overrides(
        &[
            "resnet.params.lr=1",
            "data.params.n_train=4",
            "data.params.kind=moons",
            "resnet.retries=3",
            "resnet.device=cuda",
        ],
        &[],
    );
    let p = load_text(SMALL, &o).unwrap();
    let resnet = p.stage("resnet").unwrap();
    assert_eq!(resnet.params["lr"], json!(1.0));
    assert!(
        resnet.params["lr"].is_f64(),
        "an int given for a float param is stored as a float"
    );
    assert_eq!(resnet.retries, 3);
    assert_eq!(resnet.device, Device::Cuda(None));
    let data = p.stage("data").unwrap();
    assert_eq!(data.params["n_train"], json!(4));
    assert_eq!(data.params["kind"], json!("moons"));

    let o = overrides(
        &[
            "resnet.params.lr=0.1",
            "resnet.resources.cpus=4",
            "vars.width=32",
        ],
        &[],
    );
    let p = load_text(SMALL, &o).unwrap();
    assert_eq!(p.stage("resnet").unwrap().params["lr"], json!(0.1));
    assert_eq!(p.stage("resnet").unwrap().resources.cpus, 4.0);
    assert_eq!(p.vars["width"], json!(32));

    // A bad value is reported like one in the file, but names the argument instead of a place.
    let d = load_text(
        SMALL,
        &overrides(&["data.params.n_train=4.0", "resnet.params.lr=fast"], &[]),
    )
    .unwrap_err();
    assert_eq!(summary(&d), vec![
        (0, 0, "in `--set data.params.n_train=4.0`: parameter `n_train` of op `data.toy2d` expects an integer ≥ 1, found a number `4.0`".to_owned()),
        (0, 0, "in `--set resnet.params.lr=fast`: parameter `lr` of op `train.flow` expects a positive number, found a string `fast`".to_owned()),
    ]);
}

#[test]
fn set_on_an_axis_pins_it_to_one_value() {
    let p = load_text(SMALL, &overrides(&["resnet.params.steps=2"], &[])).unwrap();
    let resnet = p.stage("resnet").unwrap();
    assert_eq!(resnet.matrix.axes[1], ("steps".to_string(), vec![json!(2)]));
    assert_eq!(resnet.matrix.expand().len(), 2);
}

#[test]
fn set_with_an_unknown_stage_or_key_is_an_error_with_a_suggestion() {
    let d = load_text(
        SMALL,
        &overrides(
            &[
                "resnt.params.lr=0.1",
                "resnet.retires=2",
                "resnet.params.lrr=1",
            ],
            &[],
        ),
    )
    .unwrap_err();
    assert_eq!(summary(&d), vec![
        (0, 0, "in `--set resnt.params.lr=0.1`: there is no stage `resnt`".to_owned()),
        (0, 0, "in `--set resnet.retires=2`: unknown key `retires` in stage `resnet`".to_owned()),
        (0, 0, "in `--set resnet.params.lrr=1`: unknown parameter `lrr` for op `train.flow` in stage `resnet`".to_owned()),
    ]);
    assert_eq!(d.items[0].help.as_deref(), Some("did you mean `resnet`?"));
    assert_eq!(d.items[1].help.as_deref(), Some("did you mean `retries`?"));
    assert_eq!(d.items[2].help.as_deref(), Some("did you mean `lr`?"));
    assert!(d.to_string().starts_with("error: in `--set resnt.params.lr=0.1`: there is no stage `resnt`\n  = hint: did you mean `resnet`?\n\n"));
}

#[test]
fn matrix_overrides_replace_or_add_an_axis() {
    let p = load_text(SMALL, &overrides(&[], &["resnet.steps=4,8,16"])).unwrap();
    let resnet = p.stage("resnet").unwrap();
    assert_eq!(
        resnet.matrix.axes,
        vec![
            (
                "weights".to_string(),
                vec![json!("shared"), json!("unshared")]
            ),
            ("steps".to_string(), vec![json!(4), json!(8), json!(16)]),
        ]
    );
    assert_eq!(resnet.matrix.expand().len(), 6);

    // A new axis is added after the others and taken out of `params`.
    let p = load_text(SMALL, &overrides(&[], &["resnet.lr=0.1,1"])).unwrap();
    let resnet = p.stage("resnet").unwrap();
    assert_eq!(
        resnet.matrix.axes[2],
        ("lr".to_string(), vec![json!(0.1), json!(1.0)])
    );
    assert!(!resnet.params.contains_key("lr"));
    assert_eq!(resnet.matrix.expand().len(), 6);

    let d = load_text(
        SMALL,
        &overrides(&[], &["resnet.steps=1,x", "rsnet.steps=1"]),
    )
    .unwrap_err();
    // Overrides that cannot be applied are reported before those whose values are wrong.
    assert_eq!(summary(&d), vec![
        (0, 0, "in `--matrix rsnet.steps=1`: there is no stage `rsnet`".to_owned()),
        (0, 0, "in `--matrix resnet.steps=1,x`: parameter `steps` of op `train.flow` expects an integer ≥ 1, found a string `x`".to_owned()),
    ]);
}

/// `--matrix train.hiden=16,32` on a `cmd` stage added an axis and a bogus flag (#21): an
/// override names what the stage has, and a leading `+` adds something new on purpose.
#[test]
fn a_misspelt_override_on_a_cmd_stage_is_an_error_not_a_new_axis() {
    let text = "\
name: c
vars: { width: 8 }
stages:
  train:
    op: cmd
    params: { run: \"true\", hidden: 8 }
    matrix: { lr: [0.1, 0.2] }
    include: [{ lr: 0.1, note: first }]
";
    let d = load_text(
        text,
        &overrides(
            &["train.params.hiden=1", "vars.widht=3"],
            &["train.hiden=16,32", "train.matrix.nte=1"],
        ),
    )
    .unwrap_err();
    assert_eq!(
        d.items
            .iter()
            .map(|i| (i.message.as_str(), i.help.as_deref().unwrap_or("")))
            .collect::<Vec<_>>(),
        vec![
            (
                "in `--set train.params.hiden=1`: stage `train` has no parameter `hiden`",
                "did you mean `hidden`? (to add a new parameter, write `--set +train.params.hiden=…`)"
            ),
            (
                "in `--set vars.widht=3`: the pipeline has no variable `widht`",
                "did you mean `width`? (to add a new variable, write `--set +vars.widht=…`)"
            ),
            (
                "in `--matrix train.hiden=16,32`: stage `train` has no parameter or matrix axis `hiden`",
                "did you mean `hidden`? (to add a new axis, write `--matrix +train.hiden=…`)"
            ),
            (
                "in `--matrix train.matrix.nte=1`: stage `train` has no parameter or matrix axis `nte`",
                "did you mean `note`? (to add a new axis, write `--matrix +train.nte=…`)"
            ),
        ]
    );

    // Replacing an axis, sweeping a param (written, or added by `include`), setting one.
    let ok = |sets: &[&str], matrices: &[&str]| {
        load_text(text, &overrides(sets, matrices)).unwrap_or_else(|d| panic!("{d}"))
    };
    let p = ok(
        &["train.params.note=x", "vars.width=4"],
        &["train.lr=0.1,0.2,0.3", "train.hidden=1,2"],
    );
    let train = p.stage("train").unwrap();
    assert_eq!(
        train.matrix.axis_names().collect::<Vec<_>>(),
        ["lr", "hidden"]
    );
    assert_eq!(train.matrix.expand().len(), 6);
    // `tag`, which every op takes.
    ok(&["train.params.tag=gpu"], &[]);
    // With a `+`: a new axis, parameter or variable; and on what exists, as without.
    let p = ok(
        &["+train.params.dropout=0.5", "+vars.depth=2"],
        &["+train.width=1,2", "+train.lr=5"],
    );
    let train = p.stage("train").unwrap();
    assert_eq!(train.params["dropout"], json!(0.5));
    assert_eq!(p.vars["depth"], json!(2));
    assert_eq!(
        train.matrix.axis_names().collect::<Vec<_>>(),
        ["lr", "width"]
    );
    // An op with declared params reports an undeclared one itself, as before.
    let d = load_text(SMALL, &overrides(&[], &["resnet.stpes=1"])).unwrap_err();
    assert_eq!(
        d.items[0].message,
        "in `--matrix resnet.stpes=1`: unknown parameter `stpes` for op `train.flow` in stage `resnet`"
    );
    // `+` is for parameters and variables only.
    for arg in ["+resnet.retries=1", "+defaults.seed=1", "+vars.a.b=1"] {
        let e = Override::parse_set(arg).unwrap_err();
        assert!(
            e.contains("a leading `+` adds a parameter or a variable"),
            "{arg}: {e}"
        );
    }
}

#[test]
fn override_arguments_are_checked_when_parsed() {
    assert!(Override::parse_set("lr=0.1").is_err());
    assert!(Override::parse_set("resnet.params.lr").is_err());
    assert!(Override::parse_matrix("resnet.steps").is_err());
    assert!(
        Overrides::parse(["a.params.b=1"], ["a.b=1,2"])
            .unwrap()
            .items
            .len()
            == 2
    );
    assert_eq!(
        Overrides::parse(["a.params.b=1"], []).unwrap().items[0].0,
        "--set a.params.b=1"
    );
}

#[test]
fn defaults_apply_only_where_the_op_declares_the_param() {
    let text = "name: d\ndefaults: { seed: 3, lr: 0.5, retries: 2 }\nstages:\n  a: { op: data.toy2d, params: { kind: moons } }\n  b: { op: train.flow, needs: a, params: { weights: shared } }\n  c: { op: cmd, params: { run: ls } }\n";
    let p = load_text(text, &Overrides::default()).unwrap();
    assert_eq!(p.stage("a").unwrap().params["seed"], json!(3));
    assert!(!p.stage("a").unwrap().params.contains_key("lr"));
    assert_eq!(p.stage("b").unwrap().params["lr"], json!(0.5));
    assert!(
        !p.stage("c").unwrap().params.contains_key("seed"),
        "cmd declares no seed"
    );
    assert!(p.stages.iter().all(|s| s.retries == 2));

    // One bad `defaults:` value is one error, however many stages use it.
    let text = "name: d\ndefaults: { seed: -1 }\nstages:\n  a: { op: data.toy2d, params: { kind: moons } }\n  b: { op: data.toy2d, params: { kind: moons } }\n";
    let d = load_text(text, &Overrides::default()).unwrap_err();
    assert_eq!(
        summary(&d),
        vec![(
            2,
            19,
            "parameter `seed` of op `data.toy2d` expects an integer ≥ 0, found an integer `-1`"
                .to_owned()
        )]
    );
}

#[test]
fn a_required_param_may_come_from_every_matrix_combination() {
    let ok = "name: m\nstages:\n  d: { op: data.toy2d, matrix: { kind: [moons, spirals] } }\n";
    assert_eq!(
        load_text(ok, &Overrides::default())
            .unwrap()
            .stage("d")
            .unwrap()
            .matrix
            .expand()
            .len(),
        2
    );
    let ok = "name: m\nstages:\n  d: { op: data.toy2d, include: [{ kind: moons }, { kind: spirals, noise: 0.1 }] }\n";
    assert_eq!(
        load_text(ok, &Overrides::default())
            .unwrap()
            .stage("d")
            .unwrap()
            .matrix
            .expand(),
        vec![
            params(json!({"kind": "moons"})),
            params(json!({"kind": "spirals", "noise": 0.1})),
        ]
    );
    let bad = "name: m\nstages:\n  d: { op: data.toy2d, matrix: { seed: [1] }, include: [{ seed: 2 }, { seed: 1, kind: moons }] }\n";
    let d = load_text(bad, &Overrides::default()).unwrap_err();
    assert_eq!(summary(&d), vec![(
        3,
        3,
        "stage `d`: op `data.toy2d` needs parameter `kind`, but the matrix combination `{\"seed\":2}` does not set it".to_owned()
    )]);
}

#[test]
fn device_parsing() {
    assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
    assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(None)));
    assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(Some(3))));
    assert_eq!("cuda:0".parse::<Device>(), Ok(Device::Cuda(Some(0))));
    assert!("gpu".parse::<Device>().is_err());
    assert!("cuda:".parse::<Device>().is_err());
    assert!("cuda:-1".parse::<Device>().is_err());
    assert_eq!(Device::Cuda(Some(3)).to_string(), "cuda:3");
    assert_eq!(Device::Cuda(Some(0)).to_string(), "cuda:0");
    assert_eq!(Device::Cuda(None).to_string(), "cuda");
    assert_eq!(Device::Cpu.to_string(), "cpu");
}

#[test]
fn did_you_mean_is_public() {
    assert_eq!(did_you_mean("stagse", ["name", "stages"]), Some("stages"));
    assert_eq!(did_you_mean("zzz", ["name", "stages"]), None);
}

#[test]
fn yaml_anchors_and_merge_keys_work() {
    let text = "\
name: anchors
stages:
  base: &train
    op: train.flow
    needs: data
    params: &p { weights: shared, steps: 2 }
  deeper:
    <<: *train
    params: { <<: *p, steps: 8 }
  data: { op: data.toy2d, params: { kind: moons } }
";
    let p = load_text(text, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.stage("base").unwrap().params["steps"], json!(2));
    let deeper = p.stage("deeper").unwrap();
    assert_eq!(deeper.op, "train.flow");
    assert_eq!(deeper.needs, [StageName::new("data")]);
    assert_eq!(deeper.params["steps"], json!(8));
    assert_eq!(deeper.params["weights"], json!("shared"));
}

#[test]
fn more_override_forms() {
    let text = "\
name: o
defaults: { seed: 1 }
stages:
  data: { op: data.toy2d, params: { kind: moons } }
  table: { op: report.table, needs: data }
";
    let o = overrides(
        &[
            "defaults.seed=5",
            "table.params.rows=[a, b]",
            "table.description=rows",
        ],
        &[],
    );
    let p = load_text(text, &o).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.stage("data").unwrap().params["seed"], json!(5));
    assert_eq!(p.stage("table").unwrap().params["rows"], json!(["a", "b"]));
    assert_eq!(
        p.stage("table").unwrap().description.as_deref(),
        Some("rows")
    );
    // `--matrix` values are YAML scalars too, and the axis type-checks them.
    let p = load_text(text, &overrides(&[], &["data.noise=0,0.5"])).unwrap();
    assert_eq!(
        p.stage("data").unwrap().matrix.axes[0].1,
        vec![json!(0.0), json!(0.5)]
    );
}

#[test]
fn odd_shapes_are_errors_not_panics() {
    let d = load_text(
        "name: x\nvars: { a: .inf }\nstages:\n  a:\n  b: 3\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        summary(&d),
        vec![
            (
                2,
                12,
                "variable `a` expects a finite number, found a non-finite number `.inf`".to_owned()
            ),
            (
                4,
                3,
                "stage `a` expects a map with at least `op`, found null".to_owned()
            ),
            (
                5,
                6,
                "stage `b` expects a map with at least `op`, found an integer `3`".to_owned()
            ),
        ]
    );
    let d = load_text(
        "name: x\nstages:\n  a: { op: cmd, params: [run] }\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        summary(&d),
        vec![(
            3,
            25,
            "`params` of stage `a` expects a map of parameters, found a list".to_owned()
        )]
    );
    let d = load_text(SMALL, &overrides(&["data.params.kind.x=1"], &[])).unwrap_err();
    assert_eq!(
        d.items[0].message,
        "in `--set data.params.kind.x=1`: cannot set `x` inside a string `spirals`"
    );
}

#[test]
fn every_op_takes_an_optional_string_tag() {
    let text = "\
name: tags
defaults: { tag: gpu }
stages:
  data: { op: data.toy2d, params: { kind: moons } }
  again: { op: data.toy2d, params: { kind: moons, tag: rerun } }
  swept: { op: data.toy2d, params: { kind: moons }, matrix: { tag: [a, b] } }
";
    let p = load_text(text, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.stage("data").unwrap().params["tag"], json!("gpu"));
    assert_eq!(p.stage("again").unwrap().params["tag"], json!("rerun"));
    assert_eq!(p.stage("swept").unwrap().matrix.expand().len(), 2);
    // Without it, a stage's params (hence its key) are what they were before `tag` existed.
    let plain = load_text(
        "name: t\nstages:\n  data: { op: data.toy2d, params: { kind: moons } }\n",
        &Overrides::default(),
    )
    .unwrap();
    assert!(!plain.stage("data").unwrap().params.contains_key("tag"));
    let d = load_text(
        "name: t\nstages:\n  data: { op: data.toy2d, params: { kind: moons, tag: 3 } }\n",
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(d.contains("tag"), "{d}");
}

// --- Unbounded input, bounded errors --------------------------------------------------------

/// A pipeline whose 100 MB `description:` line had an error printed 209 MB of stderr: the
/// excerpt is cut around the span, and the carets still point at the bad value.
#[test]
fn an_error_on_a_megabyte_line_renders_in_a_few_kilobytes() {
    let long = "d".repeat(1_000_000);
    let text = format!(
        "name: big\nstages:\n  s: {{ op: cmd, description: \"{long}\", params: {{ run: ls }}, retries: two }}\n"
    );
    let d = load_text(&text, &Overrides::default()).unwrap_err();
    let rendered = d.to_string();
    assert!(rendered.len() < 2_000, "{} bytes", rendered.len());
    assert_eq!(d.items.len(), 1, "{rendered}");
    let line = text.lines().nth(2).unwrap();
    let col = line.find("two").unwrap() + 1;
    assert!(
        rendered.contains(&format!("--> test.yaml:3:{col}\n")),
        "{rendered}"
    );
    // The excerpt line and the caret line under it: the carets sit under `two`.
    let lines: Vec<&str> = rendered.lines().collect();
    let excerpt = lines.iter().position(|l| l.starts_with(" 3 | ")).unwrap();
    let text_line: Vec<char> = lines[excerpt][5..].chars().collect();
    let carets = &lines[excerpt + 1][5..];
    let at = carets.find('^').unwrap();
    assert_eq!(text_line[0], '…');
    assert_eq!(text_line[at..at + 3].iter().collect::<String>(), "two");
    assert!(
        carets[at..].starts_with("^^^ expected an integer ≥ 0"),
        "{carets}"
    );
}

#[test]
fn a_megabyte_key_or_stage_name_is_quoted_cut() {
    let key = "k".repeat(1_000_000);
    // YAML limits implicit keys to 1024 characters; an explicit key (`? …`) has no limit.
    let text =
        format!("name: x\n? {key}\n: 1\nstages:\n  s: {{ op: cmd, params: {{ run: ls }} }}\n");
    let d = load_text(&text, &Overrides::default()).unwrap_err();
    assert_eq!(d.items.len(), 1);
    let message = &d.items[0].message;
    assert!(
        message.starts_with("unknown key `kkk") && message.ends_with("…` in the pipeline"),
        "{message}"
    );
    assert!(message.len() < 200, "{message}");
    assert!(d.to_string().len() < 2_000);

    // A huge stage name, needed by a misspelling of it and given a bad attribute: every
    // message that names it quotes it cut, and no "did you mean" takes minutes to work out.
    let stage = "a".repeat(1_000_000);
    let text = format!(
        "name: x\nvars: {{ ? {key} : 1 }}\nstages:\n  ? {stage}\n  : {{ op: cmd, params: {{ run: \"${{vars.{key}x}}\" }}, retries: two }}\n  b: {{ op: cmd, needs: [{stage}b], params: {{ run: ls, ? {key} : .nan }} }}\n"
    );
    let started = std::time::Instant::now();
    let d = load_text(&text, &Overrides::default()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let rendered = d.to_string();
    assert_eq!(
        d.items.len(),
        5,
        "{}",
        &rendered[..rendered.len().min(5_000)]
    );
    assert!(rendered.len() < 8_000, "{} bytes", rendered.len());
    for item in &d.items {
        assert!(item.message.len() < 400, "{}", item.message);
        assert!(
            item.help.as_ref().is_none_or(|h| h.len() < 400),
            "{:?}",
            item.help
        );
    }
    // A `--set` with a huge argument is quoted cut too.
    let arg = format!("s.params.{key}=1");
    let d = load_text(SMALL, &overrides(&[&arg], &[])).unwrap_err();
    assert!(d.to_string().len() < 1_000, "{d}");
    let e = Override::parse_set(&format!("{key}=1")).unwrap_err();
    assert!(e.len() < 400, "{e}");
}

// --- Names that would fail as file names --------------------------------------------------------

/// A pipeline named with ~240 characters passed validation, and the run failed at its end with
/// "File name too long" writing `results/<name>/` and `cache/v1/pipelines/<name>.json`.
#[test]
fn over_long_pipeline_and_stage_names_are_refused_at_load() {
    let fits = "p".repeat(MAX_NAME_BYTES);
    let stage = "s".repeat(MAX_NAME_BYTES);
    let text = format!("name: {fits}\nstages:\n  {stage}: {{ op: cmd, params: {{ run: ls }} }}\n");
    let p = load_text(&text, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.name, fits);
    assert_eq!(p.stages[0].name.as_str(), stage);

    let text = format!(
        "name: {fits}p\nstages:\n  {stage}s: {{ op: cmd, params: {{ run: ls }} }}\n  ok: {{ op: cmd, params: {{ run: ls }} }}\n"
    );
    let d = load_text(&text, &Overrides::default()).unwrap_err();
    let shown = |c: char| format!("{}…", c.to_string().repeat(39));
    assert_eq!(
        summary(&d),
        vec![
            (
                1,
                7,
                format!(
                    "pipeline name `{}` is too long (129 bytes; the limit is 128)",
                    shown('p')
                )
            ),
            (
                3,
                3,
                format!(
                    "stage name `{}` is too long (129 bytes; the limit is 128)",
                    shown('s')
                )
            ),
        ]
    );
    assert_eq!(d.items[0].span.unwrap().len, 129);
    assert_eq!(d.items[0].label.as_deref(), Some("longer than 128 bytes"));
    let help = d.items[0].help.as_deref().unwrap();
    assert!(
        help.contains("`results/<name>/`") && help.contains("255 bytes"),
        "{help}"
    );
    assert!(
        d.items[1]
            .help
            .as_deref()
            .unwrap()
            .contains("`results/<pipeline>/<stage>.parquet`")
    );
    // Bytes, not characters: a name is ASCII, but the count must not be fooled either way.
    let d = load_text(
        &format!(
            "name: {}\nstages:\n  a: {{ op: cmd, params: {{ run: ls }} }}\n",
            "é".repeat(65)
        ),
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(d.items.len(), 2, "{d}");
    assert!(
        d.items[1].message.contains("(130 bytes; the limit is 128)"),
        "{d}"
    );
}

// --- Numbers a run cannot use ---------------------------------------------------------------------

/// Every place a number is read refuses a non-finite one (`.nan`, `.inf`, `1e400`, which
/// overflows f64), a float beyond 32 bits, and an integer beyond 64 bits, at its place.
#[test]
fn non_finite_and_out_of_range_numbers_are_errors_everywhere() {
    let text = "\
name: n
vars: { big: 1e400 }
defaults: { noise: .nan }
stages:
  d:
    op: data.toy2d
    params: { kind: moons, noise: .inf }
    matrix: { n_train: [10, .nan] }
  t:
    op: train.flow
    needs: d
    matrix: { lr: [0.1, -.inf, 1e39] }
    include: [{ weights: shared, lr: 1e300 }]
    resources: { cpus: .inf, mem_gb: .nan, gpus: 1e400 }
    params: { weights: shared }
  c: { op: cmd, params: { run: ls, x: [1, .nan] }, matrix: { y: [1e400] } }
";
    let d = load_text(text, &Overrides::default()).unwrap_err();
    let at: Vec<(u32, u32)> = summary(&d).into_iter().map(|(l, c, _)| (l, c)).collect();
    assert_eq!(
        at,
        [
            (2, 14),
            (3, 20),
            (7, 35),
            (8, 29),
            (12, 25),
            (12, 32),
            (13, 38),
            (14, 24),
            (14, 38),
            (14, 50),
            (16, 43),
            (16, 66)
        ],
        "\n{d}"
    );
    let message = |line: u32, col: u32| {
        d.items
            .iter()
            .find(|i| i.span.is_some_and(|s| (s.line, s.col) == (line, col)))
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(
        message(2, 14),
        "variable `big` expects a finite number, found a non-finite number `.inf`"
    );
    assert!(message(12, 32).ends_with("expects a positive number ≤ 3.4e38 (values are computed in 32-bit floats), found a number `1e39`"));
    assert!(message(13, 38).ends_with("found a number `1e300`"));
    assert_eq!(
        message(14, 24),
        "`resources.cpus` of stage `t` expects a number > 0, found a non-finite number `.inf`"
    );

    // The same through `--set` and `--matrix`.
    let sets = [
        "resnet.params.lr=1e39",
        "vars.width=.nan",
        "data.resources.gpus=.inf",
        "data.params.noise=1e400",
    ];
    let mut messages: Vec<String> = Vec::new();
    for o in [
        overrides(&sets, &["resnet.steps=1,.inf"]),
        overrides(&[], &["resnet.lr=0.1,1e39"]),
    ] {
        let d = load_text(SMALL, &o).unwrap_err();
        messages.extend(d.items.iter().map(|i| i.message.clone()));
    }
    assert_eq!(messages.len(), 6, "{messages:#?}");
    for (fragment, expected) in [
        (
            "--set resnet.params.lr=1e39",
            "(values are computed in 32-bit floats), found a number `1e39`",
        ),
        (
            "--set vars.width=.nan",
            "variable `width` expects a finite number",
        ),
        (
            "--set data.resources.gpus=.inf",
            "expects a number ≥ 0, found a non-finite number",
        ),
        (
            "--set data.params.noise=1e400",
            "found a non-finite number `.inf`",
        ),
        (
            "--matrix resnet.steps=1,.inf",
            "expects an integer ≥ 1, found a non-finite number",
        ),
        (
            "--matrix resnet.lr=0.1,1e39",
            "(values are computed in 32-bit floats), found a number `1e39`",
        ),
    ] {
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&format!("in `{fragment}`: ")) && m.contains(expected)),
            "{fragment}: {messages:#?}"
        );
    }
}

/// `steps: 99999999999999999999` was quietly read as the float 1e20.
#[test]
fn integers_beyond_64_bits_are_errors_in_the_file_and_on_the_command_line() {
    let text = "name: n\nstages:\n  d: { op: data.toy2d, params: { kind: moons, n_train: 99999999999999999999, seed: -99999999999999999999 } }\n";
    let d = load_text(text, &Overrides::default()).unwrap_err();
    assert_eq!(
        summary(&d),
        vec![
            (3, 56, "integer `99999999999999999999` is too large (the largest is 9223372036854775807)".to_owned()),
            (3, 84, "integer `-99999999999999999999` is too small (the smallest is -9223372036854775808)".to_owned()),
        ]
    );
    for arg in [
        "data.params.n_train=99999999999999999999",
        "data.params.n_train=9223372036854775808",
    ] {
        let e = Overrides::parse([arg], []).unwrap_err();
        assert_eq!(
            e,
            format!(
                "invalid value in `{arg}`: integer `{}` is too large (the largest is 9223372036854775807)",
                arg.split('=').nth(1).unwrap()
            )
        );
    }
    assert!(Overrides::parse([], ["data.seed=1,99999999999999999999"]).is_err());
    // Text that only looks numeric is still a string, as before.
    let p = load_text(
        SMALL,
        &overrides(
            &["data.params.kind=moons", "+vars.v=0x7fffffffffffffffffff"],
            &[],
        ),
    )
    .unwrap();
    assert_eq!(p.vars["v"], json!("0x7fffffffffffffffffff"));
}

// --- `timeout` ----------------------------------------------------------------------------------

const TIMEOUTS: &str = "\
name: t
defaults: { timeout: 1h }
stages:
  a: { op: cmd, params: { run: ls }, timeout: 10m }
  b: { op: cmd, params: { run: ls }, timeout: 90 }
  c: { op: cmd, params: { run: ls } }
";

#[test]
fn a_stage_timeout_is_a_duration_outside_the_params() {
    let p = load_text(TIMEOUTS, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
    let timeout = |s: &str| p.stage(s).unwrap().timeout;
    assert_eq!(timeout("a"), Some(Duration::from_secs(600)));
    assert_eq!(timeout("b"), Some(Duration::from_secs(90)));
    assert_eq!(
        timeout("c"),
        Some(Duration::from_secs(3600)),
        "from `defaults`"
    );
    // Not a param: it must never change a key.
    assert!(p.stages.iter().all(|s| !s.params.contains_key("timeout")));
    assert_eq!(
        p.stage("a").unwrap().params,
        params(json!({"run": "ls", "deps": []}))
    );
    // Without one anywhere, there is none.
    assert_eq!(
        load_text(SMALL, &Overrides::default())
            .unwrap()
            .stage("data")
            .unwrap()
            .timeout,
        None
    );
    // `--set` sets it like `retries`.
    let p = load_text(
        TIMEOUTS,
        &overrides(
            &["c.timeout=1h30m", "defaults.timeout=5", "a.timeout=45s"],
            &[],
        ),
    )
    .unwrap();
    assert_eq!(p.stage("a").unwrap().timeout, Some(Duration::from_secs(45)));
    assert_eq!(p.stage("b").unwrap().timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        p.stage("c").unwrap().timeout,
        Some(Duration::from_secs(5400))
    );
}

#[test]
fn a_bad_timeout_is_reported_at_its_value() {
    let text = "\
name: t
defaults: { timeout: forever }
stages:
  a: { op: cmd, params: { run: ls }, timeout: 10x }
  b: { op: cmd, params: { run: ls }, timeout: 0 }
  c: { op: cmd, params: { run: ls }, timeout: 1.5 }
  d: { op: cmd, params: { run: ls }, timeout: 400d }
  e: { op: cmd, params: { run: ls }, timout: 1h }
";
    let d = load_text(text, &Overrides::default()).unwrap_err();
    assert_eq!(
        summary(&d),
        vec![
            (2, 22, "invalid `timeout` in `defaults`: `forever` is not a duration".to_owned()),
            (4, 47, "invalid `timeout` of stage `a`: `10x` is not a duration".to_owned()),
            (5, 47, "invalid `timeout` of stage `b`: `0` is not a positive duration".to_owned()),
            (
                6,
                47,
                "`timeout` of stage `c` expects a duration such as `30m` or `1h30m`, found a number `1.5`".to_owned()
            ),
            (7, 47, "invalid `timeout` of stage `d`: `400d` is longer than 365d".to_owned()),
            (8, 38, "unknown key `timout` in stage `e`".to_owned()),
        ]
    );
    let forms = "write seconds (`90`, `90s`) or a duration like `30m`, `1h`, `1h30m` or `2d`, at most `365d`";
    assert!(
        d.items[..5]
            .iter()
            .all(|i| i.help.as_deref() == Some(forms))
    );
    assert_eq!(d.items[1].label.as_deref(), Some("invalid duration"));
    assert_eq!(d.items[5].help.as_deref(), Some("did you mean `timeout`?"));
    assert!(
        d.to_string().contains(
            " 4 |   a: { op: cmd, params: { run: ls }, timeout: 10x }\n   |                                               ^^^ invalid duration"
        ),
        "{d}"
    );
    // The list of a stage's keys names it.
    let d = load_text(
        "name: t\nstages:\n  a: { op: cmd, params: { run: ls }, zzz: 1 }\n",
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        d.items[0]
            .help
            .as_deref()
            .unwrap()
            .contains("`retries`, `timeout`"),
        "{d}"
    );
    let d = load_text(SMALL, &overrides(&["resnet.timeout=soon"], &[])).unwrap_err();
    assert_eq!(
        d.items[0].message,
        "in `--set resnet.timeout=soon`: invalid `timeout` of stage `resnet`: `soon` is not a duration"
    );
}

// --- `strict` (#21) -----------------------------------------------------------------------------

/// A report builds from the inputs that finished unless it is `strict`; other stages always
/// need every input, so the key is theirs to refuse.
#[test]
fn strict_is_a_report_stage_key_also_under_defaults() {
    let text = |defaults: &str, table: &str| {
        format!(
            "name: s\n{defaults}stages:\n  a: {{ op: cmd, params: {{ run: ls }} }}\n  \
             table: {{ op: report.table, needs: [a]{table} }}\n"
        )
    };
    let strict = |defaults: &str, table: &str| {
        let p = load_text(&text(defaults, table), &Overrides::default())
            .unwrap_or_else(|d| panic!("{d}"));
        (
            p.stage("table").unwrap().strict,
            p.stage("a").unwrap().strict,
        )
    };
    assert_eq!(strict("", ""), (false, false));
    assert_eq!(strict("", ", strict: true"), (true, false));
    // Under `defaults`, it reaches the reports only.
    assert_eq!(strict("defaults: { strict: true }\n", ""), (true, false));
    assert_eq!(
        strict("defaults: { strict: true }\n", ", strict: false"),
        (false, false)
    );
    // Not a param: it never changes a key.
    let p = load_text(&text("", ", strict: true"), &Overrides::default()).unwrap();
    assert!(!p.stage("table").unwrap().params.contains_key("strict"));

    let err = |text: &str| summary(&load_text(text, &Overrides::default()).unwrap_err());
    assert_eq!(
        err("name: s\nstages:\n  a: { op: cmd, params: { run: ls }, strict: true }\n"),
        [(
            3,
            46,
            "`strict` of stage `a`: op `cmd` does not build a report".to_owned()
        )]
    );
    assert_eq!(
        err(&text("defaults: { strict: 1 }\n", "")),
        [(
            2,
            21,
            "`strict` in `defaults` expects `true` or `false`, found an integer `1`".to_owned()
        )]
    );
}

// --- `fuse` -------------------------------------------------------------------------------------

#[test]
fn a_stage_fuse_is_auto_on_off_or_a_cap_outside_the_params() {
    use ablate_spec::Fuse;
    let text = "\
name: t
defaults: { fuse: 8 }
stages:
  a: { op: cmd, params: { run: ls }, fuse: off }
  b: { op: cmd, params: { run: ls }, fuse: auto }
  c: { op: cmd, params: { run: ls } }
  d: { op: cmd, params: { run: ls }, fuse: 1 }
  e: { op: cmd, params: { run: ls }, fuse: 64 }
  f: { op: cmd, params: { run: ls }, fuse: on }
";
    let p = load_text(text, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
    let fuse = |s: &str| p.stage(s).unwrap().fuse;
    assert_eq!(fuse("a"), Fuse::Off);
    assert_eq!(fuse("b"), Fuse::Auto { max: None });
    assert_eq!(fuse("c"), Fuse::On { max: Some(8) }, "from `defaults`");
    assert_eq!(fuse("d"), Fuse::Off, "one member per group is no fusion");
    assert_eq!(fuse("e"), Fuse::On { max: Some(64) });
    assert_eq!(fuse("f"), Fuse::On { max: None });
    // Not a param: it never changes a key.
    assert!(p.stages.iter().all(|s| !s.params.contains_key("fuse")));
    // Without one anywhere, it is `auto`.
    assert_eq!(
        load_text(SMALL, &Overrides::default())
            .unwrap()
            .stage("data")
            .unwrap()
            .fuse,
        Fuse::Auto { max: None }
    );
    // `--set` sets it like `timeout`.
    let p = load_text(text, &overrides(&["b.fuse=off", "a.fuse=4"], &[])).unwrap();
    assert_eq!(p.stage("a").unwrap().fuse, Fuse::On { max: Some(4) });
    assert_eq!(p.stage("b").unwrap().fuse, Fuse::Off);
}

#[test]
fn a_bad_fuse_is_reported_at_its_value_with_the_allowed_forms() {
    let text = "\
name: t
defaults: { fuse: yes }
stages:
  a: { op: cmd, params: { run: ls }, fuse: 0 }
  b: { op: cmd, params: { run: ls }, fuse: true }
  c: { op: cmd, params: { run: ls }, fuse: 2.5 }
";
    let d = load_text(text, &Overrides::default()).unwrap_err();
    let expected = "`auto`, `on`, `off` or a number of members ≥ 1";
    assert_eq!(
        summary(&d),
        [
            (
                2,
                19,
                format!("`fuse` in `defaults` expects {expected}, found a string `yes`")
            ),
            (
                4,
                44,
                format!("`fuse` of stage `a` expects {expected}, found an integer `0`")
            ),
            (
                5,
                44,
                format!("`fuse` of stage `b` expects {expected}, found a boolean `true`")
            ),
            (
                6,
                44,
                format!("`fuse` of stage `c` expects {expected}, found a number `2.5`")
            ),
        ]
    );
    let rendered = d.to_string();
    assert!(rendered.contains("test.yaml:4:44"), "{rendered}");
    assert!(
        rendered.contains("`auto`, `on`, `off` or a whole number N ≥ 1"),
        "the help names the forms: {rendered}"
    );
}

const SEARCH: &str = r#"
name: s
vars: { top: 0.5 }
stages:
  data:
    op: data.toy2d
    params: { kind: moons }
  train:
    op: train.flow
    needs: data
    matrix: { seed: [0, 1] }
    search:
      n: 6
      seed: 7
      params:
        lr: { loguniform: [1.0e-4, "${vars.top}"] }
        steps: { int: [1, 8] }
        weights: { choice: [shared, unshared] }
"#;

fn search_of(p: &Pipeline, stage: &str) -> ablate_spec::Search {
    p.stage(stage).unwrap().matrix.search.clone().unwrap()
}

#[test]
fn a_search_samples_its_params_and_crosses_them_with_the_axes() {
    let p = load_text(SEARCH, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
    let train = p.stage("train").unwrap();
    let search = search_of(&p, "train");
    assert_eq!((search.n, search.seed), (6, 7));
    let names: Vec<&str> = search.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["lr", "steps", "weights"]);
    assert_eq!(
        search.params[0].1,
        ablate_spec::Distribution::LogUniform {
            low: 1e-4,
            high: 0.5
        }
    );
    // Sampled params are not params; the matrix axes stay.
    assert_eq!(train.params.get("lr"), None);
    assert_eq!(train.params.get("steps"), None);
    assert_eq!(
        train.matrix.label_order(),
        ["lr", "steps", "weights", "seed"]
    );
    // Every sample runs for every seed, sample by sample.
    let all = train.matrix.expand();
    assert_eq!(all.len(), 2 * search.samples.len());
    for (i, sample) in search.samples.iter().enumerate() {
        for (j, seed) in [0, 1].into_iter().enumerate() {
            let c = &all[2 * i + j];
            assert_eq!(c["seed"], json!(seed));
            assert_eq!(c["lr"], sample[0]);
            assert!(c["lr"].is_f64() && c["steps"].is_i64() && c["weights"].is_string());
        }
    }
    let combinations = train.matrix.combinations();
    assert_eq!(combinations.len(), all.len());
    let mut got = Vec::new();
    for (i, want) in all.iter().enumerate() {
        combinations.get(i, &mut got);
        let want: Vec<(&str, &Value)> = want.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(got, want);
    }
}

/// The samples of a smaller `n` are the first of a larger one (and so are their instances and
/// keys, tested in the plan): raising `n` keeps what ran.
#[test]
fn raising_n_keeps_the_first_samples() {
    let load_n = |n: u64| {
        search_of(
            &load_text(SEARCH, &overrides(&[&format!("train.search.n={n}")], &[])).unwrap(),
            "train",
        )
    };
    let (five, ten) = (load_n(5), load_n(10));
    assert_eq!(ten.samples[..five.samples.len()], five.samples[..]);
    assert!(ten.samples.len() > five.samples.len());
}

/// A small space repeats samples; a repeat would be the same instance, so it is dropped.
#[test]
fn repeated_samples_are_dropped() {
    let text = SEARCH.replace("n: 6", "n: 40").replace(
        "lr: { loguniform: [1.0e-4, \"${vars.top}\"] }\n        steps: { int: [1, 8] }",
        "steps: { int: [1, 2] }",
    );
    let search = search_of(&load_text(&text, &Overrides::default()).unwrap(), "train");
    assert_eq!(search.n, 40);
    // 2 steps × 2 weights: at most four distinct samples, and 40 draws find them all.
    assert_eq!(search.samples.len(), 4);
}

#[test]
fn overrides_fix_or_list_a_sampled_param() {
    // `--set` of a sampled param: the others keep their values, it becomes a one-value axis.
    let base = search_of(&load_text(SEARCH, &Overrides::default()).unwrap(), "train");
    let p = load_text(SEARCH, &overrides(&["train.params.lr=0.05"], &[])).unwrap();
    let train = p.stage("train").unwrap();
    let fixed = search_of(&p, "train");
    assert!(!fixed.samples_param("lr"));
    assert_eq!(train.matrix.axes[1], ("lr".into(), vec![json!(0.05)]));
    let without_lr: Vec<Vec<Value>> = base.samples.iter().map(|s| s[1..].to_vec()).collect();
    assert_eq!(fixed.samples[..], without_lr[..fixed.samples.len()]);
    // `--matrix` lists it instead.
    let p = load_text(SEARCH, &overrides(&[], &["train.steps=2,4"])).unwrap();
    let train = p.stage("train").unwrap();
    assert!(!search_of(&p, "train").samples_param("steps"));
    assert_eq!(
        train.matrix.axes[1],
        ("steps".into(), vec![json!(2), json!(4)])
    );
    // Fixing every sampled param leaves no search.
    let p = load_text(
        SEARCH,
        &overrides(
            &[
                "train.params.lr=0.05",
                "train.params.steps=2",
                "train.params.weights=shared",
            ],
            &[],
        ),
    )
    .unwrap();
    assert_eq!(p.stage("train").unwrap().matrix.search, None);
    // The seed and `n` are set like any stage key.
    let p = load_text(SEARCH, &overrides(&["train.search.seed=8"], &[])).unwrap();
    assert_ne!(search_of(&p, "train").samples, base.samples);
    // A typo is caught as for other keys.
    let d = load_text(SEARCH, &overrides(&["train.search.nn=3"], &[])).unwrap_err();
    assert!(
        d.to_string()
            .contains("unknown key `nn` in `search` of stage `train`"),
        "{d}"
    );
}

#[test]
fn search_problems_are_reported_at_their_place() {
    let d = load_err("invalid/search.yaml", &Overrides::default());
    let got: Vec<(u32, u32)> = summary(&d).iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(
        got,
        [
            (7, 10),
            (8, 13),
            (10, 27),
            (11, 30),
            (18, 7),
            (20, 15),
            (21, 26),
            (22, 9),
            (23, 37),
            (24, 9),
            (28, 15),
            (28, 32),
            (29, 17),
            (30, 5),
            (32, 28),
            (33, 18),
            (34, 18)
        ],
        "\n{d}"
    );
    let has = |text: &str| d.items.iter().any(|i| i.message.contains(text));
    assert!(has("has low ≥ high (`0.5` ≥ `0.1`)"));
    assert!(has("needs low > 0, found `0`"));
    assert!(has("must be at least 1, found `0`"));
    assert!(has("unknown distribution `logunifrom`"));
    assert!(has(
        "`choice` of search param `steps` of stage `train` has no values"
    ));
    assert!(has(
        "a bound of `int` of search param `n_train` of stage `data` must be an integer"
    ));
    assert!(has("unknown parameter `widht` for op `train.flow`"));
    assert!(has("is both a matrix axis and sampled by `search`"));
}

#[test]
fn a_sample_the_op_refuses_is_an_error_at_its_distribution() {
    // `noise` takes a number ≥ 0; an `int` sample of a float param is normalised to a float.
    let text = "name: s\nstages:\n  d:\n    op: data.toy2d\n    params: { kind: moons }\n    search:\n      n: 3\n      params:\n        noise: { int: [-2, -1] }\n";
    let d = load_text(text, &Overrides::default()).unwrap_err();
    assert_eq!(summary(&d)[0].0, 9, "{d}");
    assert!(d.to_string().contains("expects a number ≥ 0"), "{d}");
    let ok = text.replace("[-2, -1]", "[1, 2]");
    let p = load_text(&ok, &Overrides::default()).unwrap();
    assert!(search_of(&p, "d").samples.iter().all(|s| s[0].is_f64()));
}
