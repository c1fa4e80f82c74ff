//! Building a plan: stage graph → cycle check → instances in topological order with keys.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ablate_cache::{DepDigest, Digest, HASH_SCHEME, InputRef, KeyInput};
use ablate_spec::{
    Diagnostic, Diagnostics, Fuse, OpCatalog, Params, Pipeline, Severity, Span, Stage, StageName,
    Value,
};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::deps::{self, ExpandError, Expansion};
use crate::{Instance, Plan, PlanIndex};

/// Plans a validated pipeline. `workdir` is where relative file dependencies (`cmd`'s `deps`:
/// files, directories and globs, see `deps.rs`; data files) are read from: the pipeline file's
/// directory or its `workdir:`, which the caller resolves. Every problem found is
/// reported, each pointing into the pipeline file.
pub fn build(
    pipeline: &Pipeline,
    catalog: &dyn OpCatalog,
    workdir: &Path,
) -> Result<Plan, Diagnostics> {
    let mut b = Builder {
        pipeline,
        catalog,
        workdir,
        graph: DiGraph::default(),
        by_stage: HashMap::new(),
        errors: Vec::new(),
        dep_digests: HashMap::new(),
        dep_files: HashMap::new(),
    };
    let order = b.stage_order()?;
    let mut stages = Vec::with_capacity(pipeline.stages.len());
    let mut instance_order = Vec::new();
    for &si in &order {
        let stage = &pipeline.stages[si];
        let ids = b.expand_stage(stage);
        instance_order.extend_from_slice(&ids);
        b.by_stage.insert(stage.name.clone(), ids);
    }
    if !b.errors.is_empty() {
        return Err(Diagnostics {
            source: Some(Arc::clone(&pipeline.source)),
            items: b.errors,
        });
    }
    let mut searches = Vec::new();
    for stage in &pipeline.stages {
        let ids = b.by_stage.remove(&stage.name).unwrap_or_default();
        stages.push((stage.name.clone(), ids));
        if let Some(search) = &stage.matrix.search {
            searches.push((stage.name.clone(), crate::SearchSummary::of(search)));
        }
    }
    Ok(Plan {
        pipeline: pipeline.name.clone(),
        graph: b.graph,
        stages,
        order: instance_order,
        searches,
    })
}

struct Builder<'a> {
    pipeline: &'a Pipeline,
    catalog: &'a dyn OpCatalog,
    workdir: &'a Path,
    graph: DiGraph<Instance, (), u32>,
    by_stage: HashMap<StageName, Vec<PlanIndex>>,
    errors: Vec<Diagnostic>,
    dep_digests: HashMap<String, Result<Digest, String>>,
    /// Each `deps` entry's expansion, by the entry as written.
    dep_files: HashMap<String, Result<Expansion, ExpandError>>,
}

/// An instance before its own matrix values: which inputs it reads and the labels it inherits.
struct Proto {
    inputs: Vec<PlanIndex>,
    labels: Vec<(String, Value)>,
}

fn error(
    message: String,
    span: Option<Span>,
    label: Option<String>,
    help: Option<String>,
) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        message,
        span,
        label,
        help,
    }
}

impl Builder<'_> {
    /// Stage indices in an order where every need comes first; a cycle is an error naming it.
    fn stage_order(&self) -> Result<Vec<usize>, Diagnostics> {
        let stages = &self.pipeline.stages;
        let mut g = DiGraph::<usize, ()>::with_capacity(stages.len(), stages.len());
        let nodes: Vec<NodeIndex> = (0..stages.len()).map(|i| g.add_node(i)).collect();
        let index: HashMap<&str, usize> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        for (i, s) in stages.iter().enumerate() {
            for need in &s.needs {
                g.add_edge(nodes[index[need.as_str()]], nodes[i], ());
            }
        }
        match toposort(&g, None) {
            Ok(order) => Ok(order.into_iter().map(|n| g[n]).collect()),
            Err(_) => {
                let mut items = Vec::new();
                for scc in tarjan_scc(&g) {
                    let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
                    if scc.len() < 2 && !self_loop {
                        continue;
                    }
                    let cycle = cycle_in(&g, &scc);
                    let names: Vec<&str> = cycle.iter().map(|&i| stages[i].name.as_str()).collect();
                    let first = &stages[cycle[0]];
                    let shown = names
                        .iter()
                        .chain(std::iter::once(&names[0]))
                        .map(|n| format!("`{n}`"));
                    items.push(error(
                        format!("the stages {} form a cycle", ablate_spec::backticked(&names)),
                        first.needs_span.or(Some(first.span)),
                        Some("this `needs` closes the cycle".into()),
                        Some(format!(
                            "each stage runs after the stages it needs, so none of these can start: {}",
                            shown.collect::<Vec<_>>().join(" → ")
                        )),
                    ));
                }
                Err(Diagnostics {
                    source: Some(Arc::clone(&self.pipeline.source)),
                    items,
                })
            }
        }
    }

    fn expand_stage(&mut self, stage: &Stage) -> Vec<PlanIndex> {
        let Some(schema) = self.catalog.schema(&stage.op) else {
            self.errors.push(error(
                format!("unknown op `{}`", stage.op),
                Some(stage.span),
                None,
                None,
            ));
            return Vec::new();
        };
        let (inputs_by_name, version, report) =
            (schema.inputs_by_name, schema.version, schema.gathers);
        let resources = instance_resources(stage, schema.on_device);
        let fusible = match stage.fuse {
            Fuse::Off => &[][..],
            Fuse::Auto { .. } if !self.catalog.fuses_by_default(&stage.op, stage.device) => &[][..],
            Fuse::Auto { .. } | Fuse::On { .. } => self.catalog.fusible(&stage.op),
        };
        let protos = self.protos(stage);
        let early_stop = stage.early_stop.clone().map(std::sync::Arc::new);
        let own = stage.matrix.combinations();
        let axis_order: Vec<&str> = stage.matrix.label_order();
        let n = protos.len() * own.len();
        let mut ids = Vec::with_capacity(n);
        // Reserved: growing a graph of 10,000 instances copied each of them a dozen times.
        self.graph.reserve_nodes(n);
        self.graph
            .reserve_edges(protos.iter().map(|p| p.inputs.len()).sum::<usize>() * own.len());
        let mut reported_collision = false;
        let mut combo = Vec::new();
        for proto in &protos {
            for c in 0..own.len() {
                own.get(c, &mut combo);
                if let Some((k, _)) = proto
                    .labels
                    .iter()
                    .find(|(k, _)| combo.iter().any(|(ck, _)| ck == k))
                {
                    if !reported_collision {
                        reported_collision = true;
                        self.errors.push(error(
                            format!("stage `{}` sweeps `{k}`, which the stages it needs already sweep", stage.name),
                            Some(stage.span),
                            None,
                            Some(format!(
                                "an instance maps over the instances of its needs and inherits their `{k}`; rename this matrix key or drop it"
                            )),
                        ));
                    }
                    continue;
                }
                let mut labels = Vec::with_capacity(proto.labels.len() + combo.len());
                labels.extend(proto.labels.iter().cloned());
                ordered(&combo, &axis_order, &mut labels);
                let mut params: Params = stage.params.clone();
                for &(k, v) in &combo {
                    params.insert(k.to_owned(), v.clone());
                }
                let deps = self.hash_deps(stage, &params);
                let mut refs: Vec<InputRef> = proto
                    .inputs
                    .iter()
                    .map(|&i| {
                        let inst = &self.graph[i.0];
                        InputRef {
                            name: inputs_by_name.then(|| inst.stage.to_string()),
                            key: inst.key,
                        }
                    })
                    .collect();
                if stage.gather {
                    // A gather sees a set: the order of matrix values in the file must not matter.
                    refs.sort_by(|a, b| (&a.name, a.key).cmp(&(&b.name, b.key)));
                }
                let key_input = KeyInput {
                    scheme: HASH_SCHEME,
                    op: stage.op.clone(),
                    op_version: version,
                    params,
                    inputs: refs,
                    deps,
                };
                let fuse = crate::fuse::group_of(stage, fusible, &resources, &key_input);
                let early_stop = early_stop.as_ref().map(|spec| {
                    let rest: Vec<(String, Value)> = labels
                        .iter()
                        .filter(|(k, _)| *k != spec.seeds)
                        .cloned()
                        .collect();
                    crate::EarlyStopOf {
                        spec: std::sync::Arc::clone(spec),
                        config: render_label(&rest),
                    }
                });
                let label = render_label(&labels);
                let id = if label.is_empty() {
                    stage.name.to_string()
                } else {
                    format!("{}[{label}]", stage.name)
                };
                let instance = Instance {
                    stage: stage.name.clone(),
                    id,
                    label,
                    labels,
                    op: stage.op.clone(),
                    key: key_input.key(),
                    key_input,
                    inputs: proto.inputs.clone(),
                    resources,
                    retries: stage.retries,
                    timeout: stage.timeout,
                    diverged: stage.diverged,
                    device: stage.device,
                    gather: stage.gather,
                    report,
                    strict: stage.strict,
                    fuse,
                    early_stop,
                };
                let node = PlanIndex(self.graph.add_node(instance));
                for &input in &proto.inputs {
                    self.graph.add_edge(input.0, node.0, ());
                }
                ids.push(node);
            }
        }
        // Equal ids (a value listed twice): the second is `id#2`, the third `id#3`.
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
        let mut repeated = Vec::new();
        for &node in &ids {
            let id = self.graph[node.0].id.as_str();
            let n = seen.entry(id).or_default();
            *n += 1;
            if *n > 1 {
                repeated.push((node, format!("{id}#{n}")));
            }
        }
        for (node, id) in repeated {
            self.graph[node.0].id = id;
        }
        ids
    }

    /// The input sets of a stage: none, everything (gather), or the join of its needs'
    /// instances on the matrix values they share (map/zip).
    fn protos(&mut self, stage: &Stage) -> Vec<Proto> {
        if stage.needs.is_empty() {
            return vec![Proto {
                inputs: vec![],
                labels: vec![],
            }];
        }
        let need_ids: Vec<&[PlanIndex]> = stage
            .needs
            .iter()
            .map(|n| self.by_stage.get(n).map_or(&[][..], Vec::as_slice))
            .collect();
        if stage.gather {
            return vec![Proto {
                inputs: need_ids.concat(),
                labels: vec![],
            }];
        }
        let mut protos = vec![Proto {
            inputs: vec![],
            labels: vec![],
        }];
        for ids in &need_ids {
            protos = self.join(protos, ids);
        }
        if protos.is_empty() {
            let names: Vec<String> = stage.needs.iter().map(|n| format!("`{n}`")).collect();
            self.errors.push(error(
                format!("stage `{}` has no instances: no instances of {} agree on their shared matrix values", stage.name, names.join(" and ")),
                stage.needs_span.or(Some(stage.span)),
                None,
                Some("a stage with several needs zips the instances whose common matrix keys have equal values; set `gather: true` to see them all instead".into()),
            ));
        }
        protos
    }

    fn join(&self, left: Vec<Proto>, right: &[PlanIndex]) -> Vec<Proto> {
        // Hash-join on the label keys every row on both sides has; check any other common
        // keys pairwise (only `include` can make label sets differ within a stage).
        let keys_of =
            |labels: &[(String, Value)]| labels.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        let mut common: Option<Vec<String>> = None;
        for p in &left {
            let ks = keys_of(&p.labels);
            common = Some(match common {
                None => ks,
                Some(c) => c.into_iter().filter(|k| ks.contains(k)).collect(),
            });
        }
        let mut common = common.unwrap_or_default();
        for &r in right {
            let ks = keys_of(&self.graph[r.0].labels);
            common.retain(|k| ks.contains(k));
        }
        let bucket_key = |labels: &[(String, Value)]| -> String {
            common
                .iter()
                .map(|k| {
                    labels
                        .iter()
                        .find(|(lk, _)| lk == k)
                        .map_or(String::new(), |(_, v)| v.to_string())
                })
                .collect::<Vec<_>>()
                .join("\u{1f}")
        };
        let mut buckets: HashMap<String, Vec<PlanIndex>> = HashMap::new();
        for &r in right {
            buckets
                .entry(bucket_key(&self.graph[r.0].labels))
                .or_default()
                .push(r);
        }
        let mut out = Vec::new();
        for p in left {
            let Some(matches) = buckets.get(&bucket_key(&p.labels)) else {
                continue;
            };
            for &r in matches {
                let rl = &self.graph[r.0].labels;
                let agree = rl.iter().all(|(k, v)| {
                    p.labels
                        .iter()
                        .find(|(pk, _)| pk == k)
                        .is_none_or(|(_, pv)| pv == v)
                });
                if !agree {
                    continue;
                }
                let mut labels = p.labels.clone();
                for (k, v) in rl {
                    if !labels.iter().any(|(lk, _)| lk == k) {
                        labels.push((k.clone(), v.clone()));
                    }
                }
                let mut inputs = p.inputs.clone();
                inputs.push(r);
                out.push(Proto { inputs, labels });
            }
        }
        out
    }

    /// The digests of every file `stage`'s `deps` name (see `deps.rs`), sorted by path,
    /// each once. Expansions and digests are cached for the whole plan: a sweep of 10k
    /// instances walks each pattern and reads each file once.
    fn hash_deps(&mut self, stage: &Stage, params: &Params) -> Vec<DepDigest> {
        let workdir = self.workdir;
        let mut out = Vec::new();
        for entry in self.catalog.file_deps(&stage.op, params) {
            let expansion = self
                .dep_files
                .entry(entry.clone())
                .or_insert_with(|| deps::expand(workdir, &entry))
                .clone();
            match expansion {
                Ok(Expansion::Literal) => self.hash_dep(stage, entry, None, &mut out),
                Ok(Expansion::Matched(files)) => {
                    for file in files.iter() {
                        self.hash_dep(stage, file.clone(), Some(&entry), &mut out);
                    }
                }
                Err(e) => {
                    let (message, why) = match e {
                        ExpandError::NoMatch => (
                            format!(
                                "`deps` pattern `{entry}` of stage `{}` matches no file",
                                stage.name
                            ),
                            "hidden files, `__pycache__` and cache directories are skipped"
                                .to_owned(),
                        ),
                        ExpandError::Unreadable(why) => (
                            format!(
                                "stage `{}` depends on `{entry}`, which cannot be read",
                                stage.name
                            ),
                            why,
                        ),
                    };
                    self.report_dep(stage, &entry, message, &why);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        out
    }

    /// Hashes one file (`path` as it enters the key), `pattern` being the directory or glob
    /// that matched it.
    fn hash_dep(
        &mut self,
        stage: &Stage,
        path: String,
        pattern: Option<&str>,
        out: &mut Vec<DepDigest>,
    ) {
        let workdir = self.workdir;
        let digest = self
            .dep_digests
            .entry(path.clone())
            .or_insert_with(|| {
                Digest::of_file(&workdir.join(&path)).map_err(|e| ablate_spec::error_chain(&e))
            })
            .clone();
        match digest {
            Ok(digest) => out.push(DepDigest { path, digest }),
            Err(why) => {
                let message = match pattern {
                    None => format!(
                        "stage `{}` depends on `{path}`, which cannot be read",
                        stage.name
                    ),
                    Some(p) => format!(
                        "stage `{}` depends on `{path}` (matched by `{p}`), which cannot be read",
                        stage.name
                    ),
                };
                // The entry as written: the file itself, or the pattern that matched it.
                self.report_dep(stage, pattern.unwrap_or(&path), message, &why);
            }
        }
    }

    /// A `deps` error at `entry` under the stage's `deps:` (at the key when the entry is not
    /// written as such, at the stage when `deps` comes from elsewhere: `defaults:`, a matrix, a
    /// `--set`), once however many instances share it.
    fn report_dep(&mut self, stage: &Stage, entry: &str, message: String, why: &str) {
        if self.errors.iter().any(|e| e.message == message) {
            return;
        }
        let span = stage
            .written
            .get("deps")
            .map_or(stage.span, |deps| deps.item_or_key(entry));
        self.errors.push(error(
            message,
            Some(span),
            None,
            Some(format!(
                "{why} (paths in `deps` are relative to `{}`: the pipeline file's directory, \
                 or its `workdir:`)",
                self.workdir.display()
            )),
        ));
    }
}

/// Appends a combination's values (sorted by key) to `out`: matrix axes in file order, then
/// other (`include`) keys by name.
fn ordered(combo: &[(&str, &Value)], axis_order: &[&str], out: &mut Vec<(String, Value)>) {
    out.extend(axis_order.iter().filter_map(|k| {
        combo
            .iter()
            .find(|(ck, _)| ck == k)
            .map(|(_, v)| ((*k).to_owned(), (*v).clone()))
    }));
    out.extend(
        combo
            .iter()
            .filter(|(k, _)| !axis_order.contains(k))
            .map(|(k, v)| ((*k).to_owned(), (*v).clone())),
    );
}

pub(crate) fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `weights=shared,steps=4`: how an instance's labels read in its id.
pub fn render_label(labels: &[(String, Value)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        match v {
            Value::String(s) => out.push_str(s),
            other => write!(out, "{other}").expect("writing to a String cannot fail"),
        }
    }
    out
}

/// One cycle through the strongly connected component `scc`, as stage indices, starting at
/// the stage written first in the file.
fn cycle_in(g: &DiGraph<usize, ()>, scc: &[NodeIndex]) -> Vec<usize> {
    let start = *scc
        .iter()
        .min_by_key(|n| g[**n])
        .expect("non-empty component");
    let mut path = vec![start];
    let mut on_path = vec![start];
    // Depth-first within the component until an edge returns to `start`.
    fn dfs(
        g: &DiGraph<usize, ()>,
        scc: &[NodeIndex],
        start: NodeIndex,
        path: &mut Vec<NodeIndex>,
        seen: &mut Vec<NodeIndex>,
    ) -> bool {
        let cur = *path.last().expect("non-empty path");
        let mut next: Vec<NodeIndex> = g.neighbors(cur).filter(|n| scc.contains(n)).collect();
        next.sort_by_key(|n| g[*n]);
        for n in next {
            if n == start {
                return true;
            }
            if !seen.contains(&n) {
                seen.push(n);
                path.push(n);
                if dfs(g, scc, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    dfs(g, scc, start, &mut path, &mut on_path);
    path.into_iter().map(|n| g[n]).collect()
}

/// A stage's resources as each of its instances takes them, on the local scheduler as on
/// Slurm: a CUDA stage that declares no `gpus` takes one whole GPU; an op that computes on its
/// device (`on_device`) takes its share only on a GPU, so one pipeline (`gpus: 0.25` on a
/// trainer) runs on the CPU as on GPUs. Other ops keep theirs: a program they start (`cmd`) may
/// use a GPU itself.
fn instance_resources(stage: &Stage, on_device: bool) -> ablate_spec::Resources {
    let mut r = stage.resources;
    match stage.device {
        ablate_spec::Device::Cuda(_) if r.gpus == 0.0 => r.gpus = 1.0,
        ablate_spec::Device::Cpu if on_device => r.gpus = 0.0,
        _ => {}
    }
    r
}
