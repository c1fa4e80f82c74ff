//! `ablate plan --format text|json|dot|mermaid`.

use std::fmt::Write as _;

use ablate_cache::InstanceKey;
use ablate_spec::Value;
use serde::Serialize;

use crate::{Plan, Reason, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// Renders a plan with the status of each instance (indexed by `InstanceId::index`).
pub fn render(plan: &Plan, statuses: &[Status], format: Format) -> String {
    match format {
        Format::Text => text(plan, statuses),
        Format::Json => json(plan, statuses),
        Format::Dot => dot(plan, statuses),
        Format::Mermaid => mermaid(plan, statuses),
    }
}

fn text(plan: &Plan, statuses: &[Status]) -> String {
    let cached = statuses.iter().filter(|s| s.is_cached()).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline `{}`: {} instance{}, {cached} cached, {} to run",
        plan.pipeline(),
        plan.len(),
        if plan.len() == 1 { "" } else { "s" },
        plan.len() - cached
    );
    for (stage, ids) in plan.stages() {
        let Some(first) = ids.first() else { continue };
        let stage_cached = ids
            .iter()
            .filter(|i| statuses[i.index()].is_cached())
            .count();
        let _ = writeln!(
            out,
            "\n{stage} ({}): {} instance{}, {stage_cached} cached",
            plan.instance(*first).op,
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        );
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
            match &statuses[id.index()] {
                Status::Cached(_) => {
                    let _ = writeln!(out, "  {}  {label:<width$}  cached", inst.key.short());
                }
                Status::Run(reason) => {
                    let _ = writeln!(
                        out,
                        "  {}  {label:<width$}  run: {reason}",
                        inst.key.short()
                    );
                }
            }
        }
    }
    out
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

#[derive(Serialize)]
struct JsonPlan<'a> {
    pipeline: &'a str,
    instances: Vec<JsonInstance<'a>>,
}

fn json(plan: &Plan, statuses: &[Status]) -> String {
    let instances = plan
        .instances()
        .map(|(id, inst)| {
            let (status, reason) = match &statuses[id.index()] {
                Status::Cached(_) => ("cached", None),
                Status::Run(r) => ("run", Some(r)),
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
                reason: reason.map(Reason::kind),
                detail: reason.map(Reason::to_string),
                inputs: inst.inputs.iter().map(|i| &plan.instance(*i).key).collect(),
            }
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&JsonPlan {
        pipeline: plan.pipeline(),
        instances,
    })
    .expect("plan serialises");
    s.push('\n');
    s
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(plan: &Plan, statuses: &[Status]) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"monospace\"];\n",
        escape(plan.pipeline())
    );
    for (id, inst) in plan.instances() {
        let fill = if statuses[id.index()].is_cached() {
            "#d4edda"
        } else {
            "#fff3cd"
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
            if statuses[id.index()].is_cached() {
                "cached"
            } else {
                "run"
            }
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

fn mermaid(plan: &Plan, statuses: &[Status]) -> String {
    let mut out = String::from("flowchart LR\n");
    for (id, inst) in plan.instances() {
        let class = if statuses[id.index()].is_cached() {
            "cached"
        } else {
            "run"
        };
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
    out.push_str("  classDef cached fill:#d4edda,stroke:#28a745\n  classDef run fill:#fff3cd,stroke:#ffc107\n");
    out
}
