//! `ablate plan --format text|json|dot|mermaid`.

use std::fmt::Write as _;

use serde_json::json;

use crate::{Plan, Status};

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
        "pipeline `{}`: {} instances, {cached} cached, {} to run",
        plan.pipeline(),
        plan.len(),
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

fn json(plan: &Plan, statuses: &[Status]) -> String {
    let instances: Vec<_> = plan
        .instances()
        .map(|(id, inst)| {
            let (status, reason) = match &statuses[id.index()] {
                Status::Cached(_) => ("cached", None),
                Status::Run(r) => ("run", Some(r)),
            };
            json!({
                "id": inst.id,
                "stage": inst.stage,
                "label": inst.label,
                "labels": inst.label_map(),
                "op": inst.op,
                "key": inst.key,
                "status": status,
                "reason": reason.map(|r| r.kind()),
                "detail": reason.map(|r| r.to_string()),
                "inputs": inst.inputs.iter().map(|i| plan.instance(*i).key).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = json!({ "pipeline": plan.pipeline(), "instances": instances });
    let mut s = serde_json::to_string_pretty(&doc).expect("plan serialises");
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
