use ablate_cache::{InstanceKey, KeyInput};
use ablate_spec::{Device, Params, Resources, StageName, Value};
use petgraph::graph::{DiGraph, NodeIndex};

/// Where an instance sits in its plan (a graph index, valid for that plan only): not its
/// [`InstanceKey`] (the content digest that names its cache entry) nor its `id`, the
/// `stage[label]` people read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanIndex(pub(crate) NodeIndex<u32>);

impl PlanIndex {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// One runnable unit: a stage with one combination of matrix values and one set of inputs.
#[derive(Clone, Debug)]
pub struct Instance {
    pub stage: StageName,
    /// `stage[label]`, or the stage name when the label is empty: stable across runs, it is
    /// how `ablate plan` relates an instance to its key at the last run.
    pub id: String,
    /// `weights=shared,steps=4,seed=0`: inherited labels first, then own matrix values.
    pub label: String,
    /// Matrix values that identify the instance: those inherited from the instances it maps
    /// over, then its own, in order. These become columns of the results.
    pub labels: Vec<(String, Value)>,
    pub op: String,
    pub key: InstanceKey,
    /// What the key was computed from (written into the manifest); its params are the
    /// instance's fully resolved params: the stage's params plus its own matrix values.
    pub key_input: KeyInput,
    pub inputs: Vec<PlanIndex>,
    pub resources: Resources,
    pub retries: u32,
    /// Wall-clock limit of one attempt (the stage's `timeout`); not part of the key.
    pub timeout: Option<std::time::Duration>,
    /// What a divergence does (the stage's `diverged`); not part of the key.
    pub diverged: ablate_spec::OnDiverge,
    pub device: Device,
    pub gather: bool,
    /// Its op builds a report from its inputs' results (`report.table`, `report.plot`,
    /// `report.claims`: ops that gather): it reads each input's status, so a diverged input is
    /// shown as such rather than skipping it.
    pub report: bool,
    /// A report that needs every input to have finished (the stage's `strict`); a report that
    /// is not strict also runs when some inputs failed or were skipped, and marks them.
    pub strict: bool,
    /// The fused group it may be computed in with others of its stage (the stage's `fuse:`
    /// and its op's fusible params); `None`: it always runs alone. Not part of the key.
    pub fuse: Option<crate::FuseGroup>,
    /// The stage's `early_stop:` and the configuration this instance is a seed of. Not part
    /// of the key.
    pub early_stop: Option<EarlyStopOf>,
}

/// An instance's part in its stage's successive halving (`early_stop:`).
#[derive(Clone, Debug)]
pub struct EarlyStopOf {
    pub spec: std::sync::Arc<ablate_spec::EarlyStop>,
    /// Its configuration: its label without the `seeds` param (`lr=0.01`), which the
    /// instances that differ only in their seed share; their metrics are averaged.
    pub config: String,
}

impl Instance {
    pub fn params(&self) -> &Params {
        &self.key_input.params
    }

    pub fn label_value(&self, key: &str) -> Option<&Value> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A sealed plan: the instance DAG with every key computed. Edges run input → dependant.
#[derive(Debug)]
pub struct Plan {
    pub(crate) pipeline: String,
    pub(crate) graph: DiGraph<Instance, (), u32>,
    /// Stages in file order with their instances.
    pub(crate) stages: Vec<(StageName, Vec<PlanIndex>)>,
    pub(crate) order: Vec<PlanIndex>,
    /// The stages with a `search:`, in file order.
    pub(crate) searches: Vec<(StageName, SearchSummary)>,
}

/// What a plan tells of a stage's `search:` (its samples are in its instances' labels).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSummary {
    /// Samples drawn.
    pub n: u64,
    pub seed: u64,
    /// Distinct samples (fewer than `n` when a small `int` or `choice` space repeats one).
    pub distinct: usize,
    /// The sampled params and their distributions, in file order.
    pub space: Vec<(String, ablate_spec::Distribution)>,
}

impl SearchSummary {
    pub(crate) fn of(search: &ablate_spec::Search) -> Self {
        Self {
            n: search.n,
            seed: search.seed,
            distinct: search.samples.len(),
            space: search.params.clone(),
        }
    }
}

impl Plan {
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }
    pub fn instance(&self, id: PlanIndex) -> &Instance {
        &self.graph[id.0]
    }
    /// Every instance id in topological order (inputs before dependants).
    pub fn topo_order(&self) -> &[PlanIndex] {
        &self.order
    }
    pub fn instances(&self) -> impl Iterator<Item = (PlanIndex, &Instance)> {
        self.order.iter().map(|&id| (id, &self.graph[id.0]))
    }
    pub fn inputs(&self, id: PlanIndex) -> impl Iterator<Item = (PlanIndex, &Instance)> {
        self.graph[id.0]
            .inputs
            .iter()
            .map(|&i| (i, &self.graph[i.0]))
    }
    /// The instances that read `id`'s outputs, in plan order (so the scheduler starts them in
    /// the order the file lists them).
    pub fn dependants(&self, id: PlanIndex) -> Vec<PlanIndex> {
        let mut out: Vec<PlanIndex> = self
            .graph
            .neighbors_directed(id.0, petgraph::Direction::Outgoing)
            .map(PlanIndex)
            .collect();
        out.sort_unstable();
        out
    }
    pub fn stages(&self) -> impl Iterator<Item = (&StageName, &[PlanIndex])> {
        self.stages.iter().map(|(n, ids)| (n, ids.as_slice()))
    }
    pub fn stage_instances(&self, stage: &str) -> Option<&[PlanIndex]> {
        self.stages
            .iter()
            .find(|(n, _)| n.as_str() == stage)
            .map(|(_, ids)| ids.as_slice())
    }
    /// The `search:` of a stage, if it has one.
    pub fn search(&self, stage: &str) -> Option<&SearchSummary> {
        self.searches
            .iter()
            .find(|(n, _)| n.as_str() == stage)
            .map(|(_, s)| s)
    }
    /// Every instance downstream of `ids` (excluding them), for `--force`.
    pub fn descendants(&self, ids: &[PlanIndex]) -> Vec<PlanIndex> {
        let mut seen = vec![false; self.len()];
        let mut stack: Vec<_> = ids.to_vec();
        let mut out = Vec::new();
        while let Some(id) = stack.pop() {
            for d in self.dependants(id) {
                if !seen[d.index()] {
                    seen[d.index()] = true;
                    out.push(d);
                    stack.push(d);
                }
            }
        }
        out
    }
}
