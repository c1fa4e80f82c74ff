//! `ablate plan --format text|json|dot|mermaid`.

use std::fmt::Write as _;

use ablate_cache::InstanceKey;
use ablate_spec::Value;
use serde::Serialize;

use crate::{Outlook, Plan, PlanIndex, Reason, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// Renders a plan with the status of each instance and its [`Outlook`] (both indexed by
/// `PlanIndex::index`; an empty `outlook`: none known).
pub fn render(plan: &Plan, statuses: &[Status], outlook: &[Outlook], format: Format) -> String {
    let view = View { statuses, outlook };
    match format {
        Format::Text => text(plan, &view),
        Format::Json => json(plan, &view),
        Format::Dot => dot(plan, &view),
        Format::Mermaid => mermaid(plan, &view),
    }
}

/// What is rendered of one instance: cached, skipped, or run (and why).
enum Shown<'a> {
    Cached,
    /// The diverged instance, and whether it is a direct input.
    Skipped(PlanIndex, bool),
    Run(&'a Reason, bool),
}

struct View<'a> {
    statuses: &'a [Status],
    outlook: &'a [Outlook],
}

impl View<'_> {
    fn of(&self, id: PlanIndex) -> Shown<'_> {
        let look = self.outlook.get(id.index());
        match &self.statuses[id.index()] {
            Status::Cached(_) => Shown::Cached,
            Status::Run(reason) => match look.and_then(|l| l.skipped) {
                Some((by, direct)) => Shown::Skipped(by, direct),
                None => Shown::Run(reason, look.is_some_and(|l| l.resumes)),
            },
        }
    }

    fn is_skipped(&self, id: PlanIndex) -> bool {
        matches!(self.of(id), Shown::Skipped(..))
    }

    /// Whether a run computes it (not cached, not skipped).
    fn runs(&self, id: PlanIndex) -> bool {
        matches!(self.of(id), Shown::Run(..))
    }

    /// The class of an instance in a graph: `cached`, `skip` or `run`.
    fn class(&self, id: PlanIndex) -> &'static str {
        match self.of(id) {
            Shown::Cached => "cached",
            Shown::Skipped(..) => "skip",
            Shown::Run(..) => "run",
        }
    }
}

impl Shown<'_> {
    /// The text after `run: ` or `skip: `.
    fn detail(&self, plan: &Plan) -> Option<String> {
        match *self {
            Shown::Cached => None,
            Shown::Skipped(by, true) => Some(format!("input `{}` diverged", plan.instance(by).id)),
            Shown::Skipped(by, false) => {
                Some(format!("`{}` diverged upstream", plan.instance(by).id))
            }
            Shown::Run(reason, false) => Some(reason.to_string()),
            Shown::Run(reason, true) => Some(format!(
                "{reason} (an earlier attempt left a checkpoint to resume from)"
            )),
        }
    }
}

fn text(plan: &Plan, view: &View<'_>) -> String {
    let statuses = view.statuses;
    let cached = statuses.iter().filter(|s| s.is_cached()).count();
    let skipped = view.outlook.iter().filter(|l| l.skipped.is_some()).count();
    let mut out = String::new();
    let _ = write!(
        out,
        "pipeline `{}`: {} instance{}, {cached} cached, {} to run",
        plan.pipeline(),
        plan.len(),
        if plan.len() == 1 { "" } else { "s" },
        plan.len() - cached - skipped
    );
    if skipped > 0 {
        let _ = write!(out, ", {skipped} skipped (an input diverged)");
    }
    out.push('\n');
    let groups = crate::planned_groups(plan, |id| view.runs(id));
    for (stage, ids) in plan.stages() {
        let Some(first) = ids.first() else { continue };
        let stage_cached = ids
            .iter()
            .filter(|i| statuses[i.index()].is_cached())
            .count();
        let stage_skipped = ids.iter().filter(|i| view.is_skipped(**i)).count();
        let _ = write!(
            out,
            "\n{stage} ({}): {} instance{}, {stage_cached} cached",
            plan.instance(*first).op,
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        );
        if stage_skipped > 0 {
            let _ = write!(out, ", {stage_skipped} skipped");
        }
        out.push('\n');
        if let Some(search) = plan.search(stage.as_str()) {
            let _ = writeln!(out, "  {}", search_line(search));
        }
        for g in groups
            .iter()
            .filter(|g| plan.instance(g.members[0]).stage == *stage)
        {
            let _ = writeln!(out, "  {}", group_line(g));
        }
        let width = ids
            .iter()
            .map(|i| plan.instance(*i).label.chars().count())
            .max()
            .unwrap_or(0);
        for id in ids {
            let inst = plan.instance(*id);
            let label = if inst.label.is_empty() {
                "-"
            } else {
                &inst.label
            };
            let shown = view.of(*id);
            let what = match shown {
                Shown::Cached => "cached".to_owned(),
                Shown::Skipped(..) => format!("skip: {}", shown.detail(plan).unwrap_or_default()),
                Shown::Run(..) => format!("run: {}", shown.detail(plan).unwrap_or_default()),
            };
            let _ = writeln!(out, "  {}  {label:<width$}  {what}", inst.key.short());
        }
    }
    out
}

/// `search  27 samples, seed 7: lr ~ loguniform [0.0001, 0.1], hidden ~ int [16, 64]`, with
/// how many are distinct when some repeat.
fn search_line(s: &crate::SearchSummary) -> String {
    let mut line = format!("search  {} sample{}", s.n, if s.n == 1 { "" } else { "s" });
    if s.distinct as u64 != s.n {
        let _ = write!(line, " ({} distinct)", s.distinct);
    }
    let _ = write!(line, ", seed {}:", s.seed);
    for (i, (name, d)) in s.space.iter().enumerate() {
        let _ = write!(line, "{} {name} ~ {d}", if i > 0 { "," } else { "" });
    }
    line
}

/// `fuse  ×16  (lr, seed vary)`, with the labels its members share (`width=32`) when there
/// are any and the stage's cap (`max 8`) when it has one.
fn group_line(g: &crate::PlannedGroup) -> String {
    let mut line = String::from("fuse  ");
    if !g.shared.is_empty() {
        line.push_str(&crate::render_label(&g.shared));
        line.push_str("  ");
    }
    let _ = write!(line, "×{}", g.members.len());
    if !g.vary.is_empty() {
        let _ = write!(line, "  ({} vary)", g.vary.join(", "));
    }
    if let Some(max) = g.group.cap() {
        let _ = write!(line, "  max {max}");
    }
    line
}

/// One instance in `--format json`, borrowed from the plan (a 10k-instance plan renders
/// without building a `Value` tree).
#[derive(Serialize)]
struct JsonInstance<'a> {
    id: &'a str,
    stage: &'a str,
    label: &'a str,
    labels: Labels<'a>,
    op: &'a str,
    /// Where it runs (`cpu`, `cuda`, `cuda:N`): not part of the key.
    device: String,
    key: &'a InstanceKey,
    status: &'static str,
    reason: Option<&'static str>,
    detail: Option<String>,
    inputs: Vec<&'a InstanceKey>,
}

struct Labels<'a>(&'a [(String, Value)]);

impl Serialize for Labels<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A fused group in `--format json`: the members a run computes together (see
/// [`crate::planned_groups`]).
#[derive(Serialize)]
struct JsonGroup<'a> {
    stage: &'a str,
    /// The group's digest, short.
    group: String,
    /// Member ids, in plan order.
    members: Vec<&'a str>,
    vary: &'a [String],
    /// The stage's `fuse: N`; absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<usize>,
}

/// A stage's `search:` in `--format json`; its samples are in its instances' `labels`.
#[derive(Serialize)]
struct JsonSearch<'a> {
    stage: &'a str,
    n: u64,
    seed: u64,
    distinct: usize,
    /// Param → distribution as written (`{"lr": {"loguniform": [0.0001, 0.1]}}`), in file order.
    params: Space<'a>,
}

struct Space<'a>(&'a [(String, ablate_spec::Distribution)]);

impl Serialize for Space<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, d)| (k, d)))
    }
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    pipeline: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    searches: Vec<JsonSearch<'a>>,
    instances: Vec<JsonInstance<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fuse_groups: Vec<JsonGroup<'a>>,
}

fn json(plan: &Plan, view: &View<'_>) -> String {
    let instances = plan
        .instances()
        .map(|(id, inst)| {
            let shown = view.of(id);
            let (status, reason) = match shown {
                Shown::Cached => ("cached", None),
                Shown::Skipped(..) => ("skip", Some("input diverged")),
                Shown::Run(r, _) => ("run", Some(r.kind())),
            };
            JsonInstance {
                id: &inst.id,
                stage: inst.stage.as_str(),
                label: &inst.label,
                labels: Labels(&inst.labels),
                op: &inst.op,
                device: inst.device.to_string(),
                key: &inst.key,
                status,
                reason,
                detail: shown.detail(plan),
                inputs: inst.inputs.iter().map(|i| &plan.instance(*i).key).collect(),
            }
        })
        .collect();
    let groups = crate::planned_groups(plan, |id| view.runs(id));
    let fuse_groups = groups
        .iter()
        .map(|g| JsonGroup {
            stage: plan.instance(g.members[0]).stage.as_str(),
            group: g.group.group.short(),
            members: g
                .members
                .iter()
                .map(|m| plan.instance(*m).id.as_str())
                .collect(),
            vary: &g.vary,
            max: g.group.cap(),
        })
        .collect();
    let searches = plan
        .searches
        .iter()
        .map(|(stage, s)| JsonSearch {
            stage: stage.as_str(),
            n: s.n,
            seed: s.seed,
            distinct: s.distinct,
            params: Space(&s.space),
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&JsonPlan {
        pipeline: plan.pipeline(),
        searches,
        instances,
        fuse_groups,
    })
    .expect("plan serialises");
    s.push('\n');
    s
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(plan: &Plan, view: &View<'_>) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"monospace\"];\n",
        escape(plan.pipeline())
    );
    for (id, inst) in plan.instances() {
        let class = view.class(id);
        let fill = match class {
            "cached" => "#d4edda",
            "skip" => "#e2e3e5",
            _ => "#fff3cd",
        };
        let mut label = inst.stage.to_string();
        if !inst.label.is_empty() {
            label.push_str("\\n");
            label.push_str(&escape(&inst.label));
        }
        let _ = writeln!(
            out,
            "  n{} [label=\"{label}\\n{} {}\", fillcolor=\"{fill}\"];",
            id.index(),
            inst.key.short(),
            class
        );
    }
    for (id, inst) in plan.instances() {
        for input in &inst.inputs {
            let _ = writeln!(out, "  n{} -> n{};", input.index(), id.index());
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid(plan: &Plan, view: &View<'_>) -> String {
    let mut out = String::from("flowchart LR\n");
    for (id, inst) in plan.instances() {
        let class = view.class(id);
        let mut label = inst.stage.to_string();
        if !inst.label.is_empty() {
            label.push_str("<br/>");
            label.push_str(&inst.label);
        }
        let label = label.replace('"', "#quot;");
        let _ = writeln!(
            out,
            "  n{}[\"{label}<br/>{}\"]:::{class}",
            id.index(),
            inst.key.short()
        );
    }
    for (id, inst) in plan.instances() {
        for input in &inst.inputs {
            let _ = writeln!(out, "  n{} --> n{}", input.index(), id.index());
        }
    }
    out.push_str("  classDef cached fill:#d4edda,stroke:#28a745\n  classDef run fill:#fff3cd,stroke:#ffc107\n  classDef skip fill:#e2e3e5,stroke:#6c757d\n");
    out
}
