//! Planning against a small fake catalog: instance expansion, map/zip/gather, cycles, keys,
//! statuses and their explanations, and the export formats.

use std::path::Path;

use ablate_cache::{Manifest, Origin, Store};
use ablate_plan::{Change, Format, Plan, Reason, Status, build, render, statuses};
use ablate_spec::{OpCatalog, OpSchema, Overrides, ParamSpec, ParamType, Params, SourceFile, load};
use serde_json::json;

struct Catalog(Vec<OpSchema>);

impl OpCatalog for Catalog {
    fn schema(&self, op: &str) -> Option<&OpSchema> {
        self.0.iter().find(|s| s.name == op)
    }
    fn op_names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.name).collect()
    }
    fn file_deps(&self, op: &str, params: &Params) -> Vec<String> {
        if op != "cmd" {
            return vec![];
        }
        params["deps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }
}

fn schema(name: &'static str, needs: (usize, Option<usize>), params: Vec<ParamSpec>) -> OpSchema {
    OpSchema {
        name,
        version: 1,
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
    let seed = || ParamSpec::with_default("seed", ParamType::non_negative_int(), json!(0), "");
    Catalog(vec![
        schema(
            "data",
            (0, Some(0)),
            vec![
                ParamSpec::with_default("n", ParamType::positive_int(), json!(10), ""),
                seed(),
            ],
        ),
        OpSchema {
            on_device: true,
            ..schema(
                "train",
                (1, None),
                vec![
                    ParamSpec::with_default(
                        "weights",
                        ParamType::Enum(&["shared", "unshared"]),
                        json!("shared"),
                        "",
                    ),
                    ParamSpec::with_default("steps", ParamType::positive_int(), json!(4), ""),
                    ParamSpec::with_default("lr", ParamType::positive_float(), json!(0.01), ""),
                    seed(),
                ],
            )
        },
        schema("eval", (1, None), vec![]),
        OpSchema {
            gathers: true,
            ..schema(
                "table",
                (1, None),
                vec![ParamSpec::required(
                    "rows",
                    ParamType::list(ParamType::Str),
                    "",
                )],
            )
        },
        OpSchema {
            free_params: true,
            inputs_by_name: true,
            on_device: false,
            ..schema(
                "cmd",
                (0, None),
                vec![
                    ParamSpec::required("run", ParamType::Str, ""),
                    ParamSpec::with_default("deps", ParamType::list(ParamType::Str), json!([]), ""),
                ],
            )
        },
    ])
}

const SWEEP: &str = r#"
name: sweep
defaults: { seed: 0 }
stages:
  spirals:
    op: data
  resnet:
    op: train
    needs: [spirals]
    matrix:
      weights: [shared, unshared]
      steps: [1, 2]
      seed: [0, 1]
    params: { lr: 0.01 }
  diffeo:
    op: eval
    needs: [resnet]
  table:
    op: table
    needs: [diffeo]
    params: { rows: [weights] }
"#;

fn plan_of(yaml: &str, workdir: &Path) -> Result<Plan, String> {
    let cat = catalog();
    let p = load(SourceFile::new("p.yaml", yaml), &Overrides::new(), &cat)
        .map_err(|d| d.to_string())?;
    build(&p, &cat, workdir).map_err(|d| d.to_string())
}

fn plan(yaml: &str) -> Plan {
    plan_of(yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
}

fn ids(plan: &Plan, stage: &str) -> Vec<String> {
    plan.stage_instances(stage)
        .unwrap()
        .iter()
        .map(|i| plan.instance(*i).id.clone())
        .collect()
}

fn key_of(plan: &Plan, id: &str) -> ablate_cache::InstanceKey {
    plan.instances()
        .find(|(_, i)| i.id == id)
        .unwrap_or_else(|| panic!("no instance {id}"))
        .1
        .key
}

#[test]
fn map_inherits_labels_and_gather_sees_everything() {
    let p = plan(SWEEP);
    assert_eq!(p.len(), 1 + 8 + 8 + 1);
    assert_eq!(ids(&p, "spirals"), ["spirals"]);
    assert_eq!(
        ids(&p, "resnet")[..3],
        [
            "resnet[weights=shared,steps=1,seed=0]",
            "resnet[weights=shared,steps=1,seed=1]",
            "resnet[weights=shared,steps=2,seed=0]",
        ]
    );
    // eval maps one-to-one over resnet and inherits its labels.
    let evals = ids(&p, "diffeo");
    assert_eq!(evals.len(), 8);
    assert_eq!(evals[7], "diffeo[weights=unshared,steps=2,seed=1]");
    for id in p.stage_instances("diffeo").unwrap() {
        let inst = p.instance(*id);
        assert_eq!(inst.inputs.len(), 1);
        assert_eq!(p.instance(inst.inputs[0]).labels, inst.labels);
        assert!(inst.params().is_empty(), "inherited labels are not params");
    }
    let table = p.instance(p.stage_instances("table").unwrap()[0]);
    assert_eq!((table.id.as_str(), table.inputs.len()), ("table", 8));
    // Params merge the stage's params with its own matrix values.
    let r = p.instance(p.stage_instances("resnet").unwrap()[5]);
    assert_eq!(r.params()["weights"], json!("unshared"));
    assert_eq!(r.params()["lr"], json!(0.01));
    // Topological order: every input precedes its dependants.
    let pos: std::collections::HashMap<_, _> = p
        .topo_order()
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    for (id, inst) in p.instances() {
        for input in &inst.inputs {
            assert!(pos[input] < pos[&id]);
        }
    }
}

#[test]
fn several_needs_zip_on_shared_matrix_values() {
    let p = plan(
        r#"
name: zip
stages:
  a: { op: data, matrix: { seed: [0, 1, 2] } }
  b: { op: train, needs: [a], matrix: { steps: [1, 2] } }
  c: { op: data, matrix: { n: [5, 6] } }
  j: { op: eval, needs: [b, a] }
  k: { op: eval, needs: [a, c] }
"#,
    );
    // b × a agree on seed: 6 instances of b, each with exactly its own a.
    let j = p.stage_instances("j").unwrap();
    assert_eq!(j.len(), 6);
    for id in j {
        let inst = p.instance(*id);
        let (b, a) = (p.instance(inst.inputs[0]), p.instance(inst.inputs[1]));
        assert_eq!(b.label_value("seed"), a.label_value("seed"));
        assert_eq!(b.inputs, vec![inst.inputs[1]]);
    }
    // a and c share no key: the cartesian product.
    assert_eq!(p.stage_instances("k").unwrap().len(), 6);
}

#[test]
fn zip_with_nothing_in_common_is_an_error() {
    let e = plan_of(
        r#"
name: nozip
stages:
  a: { op: data, matrix: { seed: [0, 1] } }
  b: { op: data, matrix: { seed: [2, 3] } }
  j: { op: eval, needs: [a, b] }
"#,
        Path::new("."),
    )
    .unwrap_err();
    assert!(e.contains("stage `j` has no instances"), "{e}");
    assert!(e.contains("p.yaml:6:25"), "points at `needs`: {e}");
}

#[test]
fn cycle_is_reported_with_its_stages_in_order() {
    let e = plan_of(
        r#"
name: cyc
stages:
  d: { op: data }
  a: { op: eval, needs: [d, c] }
  b: { op: eval, needs: [a] }
  c: { op: eval, needs: [b] }
"#,
        Path::new("."),
    )
    .unwrap_err();
    assert!(e.contains("the stages `a`, `b`, `c` form a cycle"), "{e}");
    assert!(e.contains("`a` → `b` → `c` → `a`"), "{e}");
    assert!(e.contains("p.yaml:5:"), "{e}");
}

#[test]
fn own_matrix_key_colliding_with_inherited_is_an_error() {
    let e = plan_of(
        r#"
name: coll
stages:
  a: { op: data, matrix: { seed: [0, 1] } }
  b: { op: train, needs: [a], matrix: { seed: [0, 1] } }
"#,
        Path::new("."),
    )
    .unwrap_err();
    assert!(e.contains("stage `b` sweeps `seed`"), "{e}");
}

#[test]
fn keys_are_stable_and_change_exactly_downstream_of_a_param() {
    let a = plan(SWEEP);
    let b = plan(SWEEP);
    let keys = |p: &Plan| {
        p.instances()
            .map(|(_, i)| (i.id.clone(), i.key))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&a), keys(&b));
    // Keys are pinned to content, not to where we run from.
    let elsewhere = plan_of(SWEEP, Path::new("/tmp")).unwrap();
    assert_eq!(keys(&a), keys(&elsewhere));

    let changed = plan(&SWEEP.replace("lr: 0.01", "lr: 0.02"));
    assert_eq!(key_of(&a, "spirals"), key_of(&changed, "spirals"));
    for stage in ["resnet", "diffeo", "table"] {
        for id in ids(&a, stage) {
            assert_ne!(key_of(&a, &id), key_of(&changed, &id), "{id} should change");
        }
    }
    // `lr: 1` and `lr: 1.0` are the same param.
    assert_eq!(
        key_of(&plan(&SWEEP.replace("lr: 0.01", "lr: 1")), "table"),
        key_of(&plan(&SWEEP.replace("lr: 0.01", "lr: 1.0")), "table")
    );
    // Renaming a stage keeps the keys of ops that see inputs by content; the pipeline name
    // and the order of matrix values do not matter either.
    let renamed = plan(
        &SWEEP
            .replace("spirals", "data")
            .replace("name: sweep", "name: other"),
    );
    assert_eq!(key_of(&a, "table"), key_of(&renamed, "table"));
    let reordered = plan(&SWEEP.replace("steps: [1, 2]", "steps: [2, 1]"));
    assert_eq!(key_of(&a, "table"), key_of(&reordered, "table"));
    assert_eq!(
        key_of(&a, "resnet[weights=shared,steps=2,seed=1]"),
        key_of(&reordered, "resnet[weights=shared,steps=2,seed=1]")
    );
}

#[test]
fn cmd_keys_follow_dep_content_and_input_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.py"), "print(1)").unwrap();
    let yaml = r#"
name: c
stages:
  src: { op: data }
  probe:
    op: cmd
    needs: [src]
    params: { run: "python probe.py {in.src}", deps: [probe.py] }
"#;
    let p1 = plan_of(yaml, dir.path()).unwrap();
    let p2 = plan_of(yaml, dir.path()).unwrap();
    assert_eq!(key_of(&p1, "probe"), key_of(&p2, "probe"));
    std::fs::write(dir.path().join("probe.py"), "print(2)").unwrap();
    let p3 = plan_of(yaml, dir.path()).unwrap();
    assert_ne!(key_of(&p1, "probe"), key_of(&p3, "probe"));
    assert_eq!(key_of(&p1, "src"), key_of(&p3, "src"));
    // `cmd` sees its inputs by stage name, so renaming the input changes its key.
    let renamed = plan_of(&yaml.replace("src", "source"), dir.path()).unwrap();
    assert_ne!(key_of(&p3, "probe"), key_of(&renamed, "probe"));

    std::fs::remove_file(dir.path().join("probe.py")).unwrap();
    let e = plan_of(yaml, dir.path()).unwrap_err();
    assert!(
        e.contains("stage `probe` depends on `probe.py`, which cannot be read"),
        "{e}"
    );
}

fn commit(store: &Store, p: &Plan, id: &str) {
    let (_, inst) = p.instances().find(|(_, i)| i.id == id).unwrap();
    let tmp = store.begin(&inst.key).unwrap();
    tmp.commit(Manifest {
        format: 0,
        key: inst.key,
        input: inst.key_input.clone(),
        origin: Origin {
            pipeline: p.pipeline().into(),
            stage: inst.stage.to_string(),
            label: inst.label.clone(),
        },
        outputs: vec![],
        metrics: vec![],
        publish: vec![],
        started_at_us: 0,
        seconds: 0.0,
        device: "cpu".into(),
        host: "h".into(),
        ablate_version: "0".into(),
        status: Default::default(),
        checksum: None,
    })
    .unwrap();
}

#[test]
fn statuses_explain_new_cached_changed_and_forced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(SWEEP);
    let st = statuses(&p, &store, &[]);
    assert!(st.iter().all(|s| *s == Status::Run(Reason::New)));

    // Everything computed and remembered as the last run.
    let mut index = store.load_index(p.pipeline());
    for (_, inst) in p.instances() {
        commit(&store, &p, &inst.id);
        index.instances.insert(inst.id.clone(), inst.key);
    }
    store.save_index(p.pipeline(), &index).unwrap();
    assert!(statuses(&p, &store, &[]).iter().all(Status::is_cached));

    // A param change: resnet says which param, diffeo/table say which input.
    let changed = plan(&SWEEP.replace("lr: 0.01", "lr: 0.02"));
    let st = statuses(&changed, &store, &[]);
    let status_of = |id: &str| {
        let (i, _) = changed.instances().find(|(_, x)| x.id == id).unwrap();
        st[i.index()].clone()
    };
    assert!(status_of("spirals").is_cached());
    assert_eq!(
        status_of("resnet[weights=shared,steps=1,seed=0]"),
        Status::Run(Reason::Changed(vec![Change::Params(vec![(
            "lr".into(),
            Some(json!(0.01)),
            Some(json!(0.02))
        )])]))
    );
    assert_eq!(
        status_of("resnet[weights=shared,steps=1,seed=0]").to_string(),
        "run: params changed (lr: 0.01 → 0.02)"
    );
    assert_eq!(
        status_of("diffeo[weights=shared,steps=1,seed=0]"),
        Status::Run(Reason::Changed(vec![Change::Inputs(vec![
            "resnet[weights=shared,steps=1,seed=0]".into()
        ])]))
    );

    // --force reruns the stage and everything downstream, nothing upstream.
    let st = statuses(&p, &store, &["diffeo"]);
    let (spirals, resnet, diffeo, table) = (
        &p.stage_instances("spirals").unwrap()[0],
        p.stage_instances("resnet").unwrap()[0],
        p.stage_instances("diffeo").unwrap()[0],
        p.stage_instances("table").unwrap()[0],
    );
    assert!(st[spirals.index()].is_cached() && st[resnet.index()].is_cached());
    assert_eq!(st[diffeo.index()], Status::Run(Reason::Forced));
    assert_eq!(st[table.index()], Status::Run(Reason::UpstreamForced));

    // A torn entry is not trusted.
    std::fs::remove_file(
        store
            .entry_dir(&p.instance(*spirals).key)
            .join("manifest.json"),
    )
    .unwrap();
    assert!(
        matches!(&statuses(&p, &store, &[])[spirals.index()], Status::Run(Reason::Invalid(why)) if why.contains("torn"))
    );
}

/// #21 (QA §13): a one-instance pipeline said "pipeline `one`: 1 instances".
#[test]
fn one_instance_is_singular_in_the_plan_text() {
    let p = plan("name: one\nstages:\n  spirals:\n    op: data\n");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = render(&p, &statuses(&p, &store, &[]), &[], Format::Text);
    assert!(
        text.starts_with("pipeline `one`: 1 instance, 0 cached, 1 to run\n"),
        "{text}"
    );
}

#[test]
fn renders_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = plan(SWEEP);
    commit(&store, &p, "spirals");
    let st = statuses(&p, &store, &[]);

    let text = render(&p, &st, &[], Format::Text);
    assert!(
        text.starts_with("pipeline `sweep`: 18 instances, 1 cached, 17 to run\n"),
        "{text}"
    );
    let spirals_key = key_of(&p, "spirals").short();
    assert!(
        text.contains(&format!("  {spirals_key}  -  cached")),
        "{text}"
    );
    assert!(
        text.contains("weights=shared,steps=1,seed=0    run: new"),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&render(&p, &st, &[], Format::Json)).unwrap();
    let instances = json["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 18);
    assert_eq!(instances[0]["status"], "cached");
    assert_eq!(instances[1]["reason"], "new");
    assert_eq!(instances[1]["labels"]["steps"], 1);
    assert_eq!(instances[17]["inputs"].as_array().unwrap().len(), 8);

    let dot = render(&p, &st, &[], Format::Dot);
    assert!(dot.starts_with("digraph \"sweep\" {"));
    assert_eq!(dot.matches(" -> ").count(), 8 + 8 + 8);
    let mermaid = render(&p, &st, &[], Format::Mermaid);
    assert!(mermaid.starts_with("flowchart LR\n"));
    assert_eq!(mermaid.matches(" --> ").count(), 24);
    assert_eq!(mermaid.matches(":::cached").count(), 1);
}

#[test]
fn gpu_shares_follow_the_device() {
    // On the local scheduler as on Slurm (whose `--gpus-per-task` reads the instance's share).
    // An op that computes on its device takes no share on the CPU; any other op keeps its own.
    let p = plan(
        "name: g\nstages:\n  d: { op: data }\n  t: { op: train, needs: d, device: cuda }\n  \
         u: { op: train, needs: d, device: 'cuda:1', resources: { gpus: 0.25 } }\n  \
         c: { op: train, needs: d, resources: { gpus: 0.25 } }\n  \
         e: { op: eval, needs: d, resources: { gpus: 0.5 } }\n",
    );
    let gpus = |id: &str| {
        p.instances()
            .find(|(_, i)| i.id == id)
            .unwrap_or_else(|| panic!("no instance {id}"))
            .1
            .resources
            .gpus
    };
    assert_eq!((gpus("d"), gpus("t"), gpus("u")), (0.0, 1.0, 0.25));
    assert_eq!((gpus("c"), gpus("e")), (0.0, 0.5));
}

/// Plain file deps (#18): globs and directories must not change the key of a pipeline whose
/// `deps` name files, even one whose name holds a glob character.
#[test]
fn plain_file_deps_keep_their_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    std::fs::write(dir.path().join("probe.py"), "print(1)").unwrap();
    std::fs::write(dir.path().join("lib/util.py"), "X = 2").unwrap();
    std::fs::write(dir.path().join("data[1].csv"), "a,b\n1,2\n").unwrap();
    let yaml = r#"
name: c
stages:
  probe:
    op: cmd
    params: { run: "python probe.py", deps: [probe.py, "data[1].csv", ./lib/util.py] }
"#;
    let p = plan_of(yaml, dir.path()).unwrap();
    let (_, inst) = p.instances().next().unwrap();
    let dep = |path: &str, bytes: &[u8]| ablate_cache::DepDigest {
        path: path.into(),
        digest: ablate_cache::Digest::of_bytes(bytes),
    };
    assert_eq!(
        inst.key_input.deps,
        [
            dep("./lib/util.py", b"X = 2"),
            dep("data[1].csv", b"a,b\n1,2\n"),
            dep("probe.py", b"print(1)"),
        ]
    );
    // The key this pipeline had before globs and directories (#18).
    assert_eq!(
        inst.key.to_hex(),
        "0f5a079f0442f85067fc451f2e398ecd459801d13fb39725a304545e2b40afee"
    );
}

/// A glob in `deps` (#18): an edited, an added and a removed matching file each change the key
/// and are named; files it does not match change nothing.
#[test]
fn glob_deps_name_edited_added_and_removed_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |f: &str, text: &str| {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("src/a.py", "a");
    write("src/m/b.py", "b");
    write("src/m/c.py", "c");
    let yaml = r#"
name: g
stages:
  probe:
    op: cmd
    params: { run: "python src/a.py", deps: ["src/**/*.py", src/a.py] }
"#;
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let p = plan_of(yaml, root).unwrap();
    let paths = |p: &Plan| -> Vec<String> {
        let (_, inst) = p.instances().next().unwrap();
        inst.key_input.deps.iter().map(|d| d.path.clone()).collect()
    };
    // Two entries matching `src/a.py` give it once.
    assert_eq!(paths(&p), ["src/a.py", "src/m/b.py", "src/m/c.py"]);
    commit(&store, &p, "probe");
    let mut index = store.load_index(p.pipeline());
    index.instances.insert("probe".into(), key_of(&p, "probe"));
    store.save_index(p.pipeline(), &index).unwrap();

    write("src/notes.txt", "not code");
    write("src/__pycache__/a.cpython-311.pyc", "bytecode");
    write("src/.hidden.py", "hidden");
    let same = plan_of(yaml, root).unwrap();
    assert_eq!(key_of(&same, "probe"), key_of(&p, "probe"));
    assert!(statuses(&same, &store, &[])[0].is_cached());

    write("src/m/b.py", "b2");
    write("src/m/d/e.py", "e");
    std::fs::remove_file(root.join("src/m/c.py")).unwrap();
    let changed = plan_of(yaml, root).unwrap();
    assert_eq!(paths(&changed), ["src/a.py", "src/m/b.py", "src/m/d/e.py"]);
    assert_ne!(key_of(&changed, "probe"), key_of(&p, "probe"));
    let st = statuses(&changed, &store, &[]);
    assert_eq!(
        st[0],
        Status::Run(Reason::Changed(vec![Change::Deps(vec![
            "src/m/b.py".into(),
            "src/m/c.py".into(),
            "src/m/d/e.py".into(),
        ])]))
    );
    assert_eq!(
        st[0].to_string(),
        "run: deps changed (src/m/b.py, src/m/c.py, src/m/d/e.py)"
    );

    // Every pattern matching nothing is reported, each naming it; an empty directory too.
    std::fs::create_dir(root.join("empty")).unwrap();
    let e = plan_of(
        &yaml.replace(
            "[\"src/**/*.py\", src/a.py]",
            "[\"lib/**/*.py\", empty, \"src/*.rs\"]",
        ),
        root,
    )
    .unwrap_err();
    for pattern in ["lib/**/*.py", "empty", "src/*.rs"] {
        assert!(
            e.contains(&format!(
                "`deps` pattern `{pattern}` of stage `probe` matches no file"
            )),
            "{e}"
        );
    }
    assert!(e.contains("paths in `deps` are relative to"), "{e}");
}

/// Two `include` entries alike make two instances with one label: their ids stay apart, the
/// second `#2` (the suffix is given once the stage's instances are made, without a copy of
/// every id, #21).
#[test]
fn instances_with_equal_labels_get_numbered_ids_in_order() {
    let p = plan(
        r#"
name: twins
stages:
  d:
    op: data
    matrix: { n: [1, 2] }
    include:
      - { n: 5, seed: 1 }
      - { n: 5, seed: 1 }
      - { n: 5, seed: 2 }
      - { n: 5, seed: 1 }
"#,
    );
    assert_eq!(
        ids(&p, "d"),
        [
            "d[n=1]",
            "d[n=2]",
            "d[n=5,seed=1]",
            "d[n=5,seed=1]#2",
            "d[n=5,seed=2]",
            "d[n=5,seed=1]#3"
        ]
    );
}

// --- fused groups (issue 23) ---------------------------------------------------------------------

/// The test catalog, with `train`'s `seed` and `lr` fusible (as the real trainers' are).
struct Fusing(Catalog);

impl OpCatalog for Fusing {
    fn schema(&self, op: &str) -> Option<&OpSchema> {
        self.0.schema(op)
    }
    fn op_names(&self) -> Vec<&'static str> {
        self.0.op_names()
    }
    fn fusible(&self, op: &str) -> &'static [&'static str] {
        match op {
            "train" => &["lr", "seed"],
            _ => &[],
        }
    }
}

fn fused_plan(yaml: &str) -> Plan {
    let cat = Fusing(catalog());
    let p = load(SourceFile::new("p.yaml", yaml), &Overrides::new(), &cat)
        .unwrap_or_else(|d| panic!("{d}"));
    build(&p, &cat, Path::new(".")).unwrap_or_else(|d| panic!("{d}"))
}

/// A seed × lr × steps sweep of `train` over one data set, with `fuse` as given.
fn fuse_sweep(fuse: &str) -> String {
    format!(
        "name: f\nstages:\n  data:\n    op: data\n  resnet:\n    op: train\n    needs: [data]\n    {fuse}\n    matrix:\n      steps: [1, 2]\n      lr: [0.1, 0.01]\n      seed: [0, 1, 2]\n  ev:\n    op: eval\n    needs: [resnet]\n"
    )
}

/// The fused group of each instance of `stage`, by id.
fn groups_of(p: &Plan, stage: &str) -> Vec<(String, Option<ablate_plan::FuseGroup>)> {
    p.stage_instances(stage)
        .unwrap()
        .iter()
        .map(|i| (p.instance(*i).id.clone(), p.instance(*i).fuse))
        .collect()
}

#[test]
fn instances_that_differ_only_in_fusible_params_share_a_group() {
    let p = fused_plan(&fuse_sweep(""));
    let groups = groups_of(&p, "resnet");
    assert_eq!(groups.len(), 12);
    // `steps` is not fusible: two groups of six (lr × seed), one per step count.
    let steps1: Vec<_> = groups
        .iter()
        .filter(|(id, _)| id.contains("steps=1"))
        .collect();
    let steps2: Vec<_> = groups
        .iter()
        .filter(|(id, _)| id.contains("steps=2"))
        .collect();
    let g1 = steps1[0]
        .1
        .expect("a fusible op in a stage without `fuse: off` has a group");
    let g2 = steps2[0].1.unwrap();
    assert!(steps1.iter().all(|(_, g)| *g == Some(g1)), "{steps1:?}");
    assert!(steps2.iter().all(|(_, g)| *g == Some(g2)), "{steps2:?}");
    assert_ne!(
        g1.group, g2.group,
        "a non-fusible param differs: two groups"
    );
    assert_eq!(g1.cap(), None, "`auto` sets no cap");
    // Ops without fusible params never fuse.
    assert!(groups_of(&p, "data").iter().all(|(_, g)| g.is_none()));
    assert!(groups_of(&p, "ev").iter().all(|(_, g)| g.is_none()));
    // Stable: the same file plans the same groups; and a group is no part of a key.
    let again = fused_plan(&fuse_sweep(""));
    assert_eq!(groups_of(&again, "resnet"), groups);
    let unfused = plan(&fuse_sweep(""));
    let keys = |p: &Plan| p.instances().map(|(_, i)| i.key).collect::<Vec<_>>();
    assert_eq!(keys(&p), keys(&unfused));
    assert_eq!(keys(&p), keys(&fused_plan(&fuse_sweep("fuse: off"))));
    // A cap is kept.
    let capped = fused_plan(&fuse_sweep("fuse: 4"));
    assert!(
        groups_of(&capped, "resnet")
            .iter()
            .all(|(_, g)| g.unwrap().max == 4)
    );
}

#[test]
fn fuse_off_or_one_member_per_group_plans_no_group() {
    for fuse in ["fuse: off", "fuse: 1"] {
        let p = fused_plan(&fuse_sweep(fuse));
        assert!(
            groups_of(&p, "resnet").iter().all(|(_, g)| g.is_none()),
            "{fuse}"
        );
    }
    // Under `defaults:` too.
    let p = fused_plan(&fuse_sweep("").replace("name: f\n", "name: f\ndefaults: { fuse: off }\n"));
    assert!(groups_of(&p, "resnet").iter().all(|(_, g)| g.is_none()));
}

/// [`Fusing`], but fusing is never faster: `auto` leaves it alone, `on` and `N` still fuse.
struct NotFaster(Fusing);

impl OpCatalog for NotFaster {
    fn schema(&self, op: &str) -> Option<&OpSchema> {
        self.0.schema(op)
    }
    fn op_names(&self) -> Vec<&'static str> {
        self.0.op_names()
    }
    fn fusible(&self, op: &str) -> &'static [&'static str] {
        self.0.fusible(op)
    }
    fn fuses_by_default(&self, _op: &str, _device: ablate_spec::Device) -> bool {
        false
    }
}

#[test]
fn auto_fuses_only_where_the_op_says_it_is_faster_and_on_fuses_anyway() {
    let cat = NotFaster(Fusing(catalog()));
    let plan_with = |fuse: &str| {
        let p = load(
            SourceFile::new("p.yaml", fuse_sweep(fuse)),
            &Overrides::new(),
            &cat,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        build(&p, &cat, Path::new(".")).unwrap_or_else(|d| panic!("{d}"))
    };
    for fuse in ["", "fuse: auto"] {
        let p = plan_with(fuse);
        assert!(
            groups_of(&p, "resnet").iter().all(|(_, g)| g.is_none()),
            "{fuse:?}"
        );
    }
    for (fuse, cap) in [("fuse: on", None), ("fuse: 4", Some(4))] {
        let p = plan_with(fuse);
        let groups = groups_of(&p, "resnet");
        assert!(
            groups
                .iter()
                .all(|(_, g)| g.is_some_and(|g| g.cap() == cap)),
            "{fuse}"
        );
    }
}

#[test]
fn members_over_different_inputs_still_share_a_group() {
    // One data set per seed: the op checks the shapes at run time.
    let yaml = "name: f\nstages:\n  data:\n    op: data\n    matrix: { seed: [0, 1] }\n  resnet:\n    op: train\n    needs: [data]\n    matrix: { lr: [0.1, 0.01] }\n";
    let p = fused_plan(yaml);
    let groups = groups_of(&p, "resnet");
    assert_eq!(groups.len(), 4);
    assert!(groups.iter().all(|(_, g)| *g == groups[0].1 && g.is_some()));
}

#[test]
fn plan_shows_each_group_with_its_members_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let p = fused_plan(&fuse_sweep("fuse: 4"));
    let text = render(&p, &statuses(&p, &store, &[]), &[], Format::Text);
    assert!(
        text.contains("\nresnet (train): 12 instances, 0 cached\n  fuse  steps=1  ×6  (lr, seed vary)  max 4\n  fuse  steps=2  ×6  (lr, seed vary)  max 4\n"),
        "{text}"
    );
    assert_eq!(text.matches("fuse  ").count(), 2, "{text}");

    // Cached members are not counted; a group left with one member to run is not shown.
    commit(&store, &p, "data");
    for id in ids(&p, "resnet") {
        let keep = [
            "steps=1,lr=0.1,seed=0",
            "steps=2,lr=0.1,seed=1",
            "steps=2,lr=0.01,seed=2",
        ];
        if !keep.iter().any(|k| id.contains(k)) {
            commit(&store, &p, &id);
        }
    }
    let st = statuses(&p, &store, &[]);
    let text = render(&p, &st, &[], Format::Text);
    assert!(
        text.contains("\nresnet (train): 12 instances, 9 cached\n  fuse  steps=2  ×2  (lr, seed vary)  max 4\n  "),
        "{text}"
    );
    assert!(!text.contains("steps=1  ×"), "{text}");

    // JSON lists the groups with their member ids.
    let json: serde_json::Value =
        serde_json::from_str(&render(&p, &st, &[], Format::Json)).unwrap();
    let groups = json["fuse_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{json}");
    assert_eq!(groups[0]["stage"], "resnet");
    assert_eq!(groups[0]["max"], 4);
    assert_eq!(groups[0]["vary"], json!(["lr", "seed"]));
    assert_eq!(
        groups[0]["members"],
        json!([
            "resnet[steps=2,lr=0.1,seed=1]",
            "resnet[steps=2,lr=0.01,seed=2]"
        ])
    );

    // Without a fusible op, nothing changes: no line, no `fuse_groups`.
    let p = plan(&fuse_sweep(""));
    let st = statuses(&p, &store, &[]);
    assert!(!render(&p, &st, &[], Format::Text).contains("fuse"));
    assert!(!render(&p, &st, &[], Format::Json).contains("fuse_groups"));
}

// --- random search (issue 24) --------------------------------------------------------------------

/// A search over `train` (lr and seed fusible in [`Fusing`], steps not), crossed with two seeds.
fn search_sweep(n: u64) -> String {
    format!(
        r#"
name: s
stages:
  data:
    op: data
  train:
    op: train
    needs: [data]
    matrix: {{ seed: [0, 1] }}
    search:
      n: {n}
      seed: 7
      params:
        lr: {{ loguniform: [1.0e-4, 1.0e-1] }}
        weights: {{ choice: [shared, unshared] }}
  ev:
    op: eval
    needs: [train]
"#
    )
}

#[test]
fn a_search_plans_one_instance_per_sample_and_grid_combination() {
    let p = plan(&search_sweep(5));
    let train = ids(&p, "train");
    assert_eq!(train.len(), 10);
    // Sampled values label the instances as matrix values do, before the axes.
    let first = p.instance(p.stage_instances("train").unwrap()[0]);
    let names: Vec<&str> = first.labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["lr", "weights", "seed"]);
    assert!(first.params()["lr"].is_f64());
    assert_eq!(first.params()["seed"], json!(0));
    // Sample by sample, each with every seed.
    let second = p.instance(p.stage_instances("train").unwrap()[1]);
    assert_eq!(first.label_value("lr"), second.label_value("lr"));
    assert_eq!(second.label_value("seed"), Some(&json!(1)));
    // Labels read short: four significant digits.
    let lr = first.label_value("lr").unwrap().to_string();
    assert!(
        lr.trim_start_matches("0.").trim_start_matches('0').len() <= 4,
        "{lr}"
    );
    // Dependants map over the samples as over matrix instances.
    assert_eq!(ids(&p, "ev").len(), 10);
    assert_eq!(
        ids(&p, "ev")[0],
        train[0].replacen("train", "ev", 1),
        "an eval inherits its train's labels"
    );
}

/// Raising `n` keeps the first samples: their instances, ids and keys are those of the smaller
/// search, so their cache entries are reused.
#[test]
fn raising_n_keeps_the_first_instances_and_their_keys() {
    let (five, ten) = (plan(&search_sweep(5)), plan(&search_sweep(10)));
    let keys = |p: &Plan, stage: &str| -> Vec<(String, ablate_cache::InstanceKey)> {
        p.stage_instances(stage)
            .unwrap()
            .iter()
            .map(|i| (p.instance(*i).id.clone(), p.instance(*i).key))
            .collect()
    };
    for stage in ["train", "ev"] {
        let (k5, k10) = (keys(&five, stage), keys(&ten, stage));
        assert_eq!(k10.len(), 20);
        assert_eq!(k10[..10], k5[..], "{stage}");
    }
    // The same file plans the same keys (the samples do not depend on the process).
    assert_eq!(keys(&ten, "train"), keys(&plan(&search_sweep(10)), "train"));
}

/// Samples that differ only in fusible params fuse as matrix instances do (issue 23): here `lr`
/// and `seed` are fusible and `weights` is not, so one group per weight sharing.
#[test]
fn samples_that_differ_only_in_fusible_params_share_a_group() {
    let p = fused_plan(&search_sweep(8));
    let instances: Vec<_> = p
        .stage_instances("train")
        .unwrap()
        .iter()
        .map(|i| p.instance(*i))
        .collect();
    let group_of = |w: &str| {
        let groups: Vec<_> = instances
            .iter()
            .filter(|i| i.label_value("weights") == Some(&json!(w)))
            .map(|i| i.fuse.expect("a fusible op has a group"))
            .collect();
        assert!(groups.len() >= 4, "{w}: {}", groups.len());
        assert!(groups.iter().all(|g| *g == groups[0]), "{w}");
        groups[0]
    };
    assert_ne!(group_of("shared").group, group_of("unshared").group);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let text = render(&p, &statuses(&p, &store, &[]), &[], Format::Text);
    assert!(text.contains("fuse  weights=shared  ×"), "{text}");
    assert!(text.contains("(lr, seed vary)"), "{text}");
}

#[test]
fn plan_shows_the_search_and_its_samples() {
    let p = plan(&search_sweep(3));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let st = statuses(&p, &store, &[]);
    let text = render(&p, &st, &[], Format::Text);
    assert!(
        text.contains(
            "\ntrain (train): 6 instances, 0 cached\n  search  3 samples, seed 7: \
             lr ~ loguniform [0.0001, 0.1], weights ~ choice [shared, unshared]\n"
        ),
        "{text}"
    );
    let first = p.instance(p.stage_instances("train").unwrap()[0]);
    assert!(text.contains(&format!("  {}  ", first.label)), "{text}");
    assert!(first.label.starts_with("lr=0.") && first.label.ends_with(",seed=0"));
    let json: serde_json::Value =
        serde_json::from_str(&render(&p, &st, &[], Format::Json)).unwrap();
    assert_eq!(
        json["searches"],
        json!([{
            "stage": "train",
            "n": 3,
            "seed": 7,
            "distinct": 3,
            "params": {
                "lr": { "loguniform": [0.0001, 0.1] },
                "weights": { "choice": ["shared", "unshared"] }
            }
        }])
    );
    let train: Vec<_> = json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["stage"] == "train")
        .collect();
    assert_eq!(train[0]["labels"]["lr"], first.params()["lr"]);
    // No search, no `searches`.
    let grid = plan(SWEEP);
    let json: serde_json::Value = serde_json::from_str(&render(
        &grid,
        &statuses(&grid, &store, &[]),
        &[],
        Format::Json,
    ))
    .unwrap();
    assert!(json.get("searches").is_none());
}
