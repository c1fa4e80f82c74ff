//! Fused groups (issue 23): the instances of one stage that differ only in their op's
//! *fusible* params (values such as `seed` or `lr`, which change neither shapes nor the step
//! schedule) may be computed as one batched computation. The plan only says which instances
//! may go together; the scheduler decides, from what is ready, which actually do. A group is
//! execution detail like a device: it never enters a key, a manifest or the cache.

use ablate_cache::{Digest, KeyInput, canonical_json};
use ablate_spec::{Fuse, Stage, Value};

use crate::{Plan, PlanIndex};

/// The group an instance may be fused with: set when its op has fusible params and its stage
/// does not say `fuse: off`. Two instances are in the same group iff their `group`s are equal:
/// same stage, op and op version, device and resources, and equal params apart from the
/// fusible ones. Their inputs may differ (one data set per member): the op checks at run time
/// that the shapes agree, and runs the members apart when they do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FuseGroup {
    /// A digest of what the members share (stable across runs and processes).
    pub group: Digest,
    /// At most this many members run as one group (the stage's `fuse: N`); `usize::MAX`: no
    /// cap (`fuse: auto` or `on`).
    pub max: usize,
}

impl FuseGroup {
    /// The cap as written, if any.
    pub fn cap(&self) -> Option<usize> {
        (self.max != usize::MAX).then_some(self.max)
    }
}

/// The group of an instance of `stage` computed from `key_input`, if its op can fuse.
pub(crate) fn group_of(
    stage: &Stage,
    fusible: &[&str],
    resources: &ablate_spec::Resources,
    key_input: &KeyInput,
) -> Option<FuseGroup> {
    let max = match stage.fuse {
        Fuse::Off => return None,
        Fuse::Auto { max } | Fuse::On { max } => max.unwrap_or(usize::MAX),
    };
    if fusible.is_empty() || stage.gather || max < 2 {
        return None;
    }
    let shared: serde_json::Map<String, Value> = key_input
        .params
        .iter()
        .filter(|(k, _)| !fusible.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let what = serde_json::json!({
        "stage": stage.name.as_str(),
        "op": key_input.op,
        "op_version": key_input.op_version,
        "device": stage.device.to_string(),
        "resources": [resources.cpus, resources.gpus, resources.mem_gb],
        "params": shared,
        "deps": key_input.deps.iter().map(|d| [d.path.clone(), d.digest.to_hex()]).collect::<Vec<_>>(),
    });
    Some(FuseGroup {
        group: Digest::of_bytes(canonical_json(&what).as_bytes()),
        max,
    })
}

/// One group as `ablate plan` shows it: its members that will run (two or more).
#[derive(Clone, Debug)]
pub struct PlannedGroup {
    pub group: FuseGroup,
    /// In plan order.
    pub members: Vec<PlanIndex>,
    /// The labels every member has with the same value (what tells this group from the other
    /// groups of its stage), in label order.
    pub shared: Vec<(String, Value)>,
    /// The params whose values differ between the members, sorted; `inputs` when their inputs
    /// differ.
    pub vary: Vec<String>,
}

/// The fused groups of `plan` with at least two members for which `runs` is true (those that
/// will be computed: not cached, not skipped), in plan order of their first member.
pub fn planned_groups(plan: &Plan, runs: impl Fn(PlanIndex) -> bool) -> Vec<PlannedGroup> {
    let mut groups: Vec<(FuseGroup, Vec<PlanIndex>)> = Vec::new();
    let mut at: std::collections::HashMap<Digest, usize> = std::collections::HashMap::new();
    for (id, inst) in plan.instances() {
        let Some(g) = inst.fuse else { continue };
        if !runs(id) {
            continue;
        }
        let i = *at.entry(g.group).or_insert_with(|| {
            groups.push((g, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(id);
    }
    groups
        .into_iter()
        .filter(|(_, members)| members.len() >= 2)
        .map(|(group, members)| {
            let first = plan.instance(members[0]);
            let rest = || members[1..].iter().map(|m| plan.instance(*m));
            let shared = first
                .labels
                .iter()
                .filter(|(k, v)| rest().all(|i| i.label_value(k) == Some(v)))
                .cloned()
                .collect();
            let mut vary: Vec<String> = first
                .params()
                .iter()
                .filter(|(k, v)| rest().any(|i| i.params().get(*k) != Some(*v)))
                .map(|(k, _)| k.clone())
                .collect();
            if rest().any(|i| i.inputs != first.inputs) {
                vary.push("inputs".to_owned());
            }
            PlannedGroup {
                group,
                members,
                shared,
                vary,
            }
        })
        .collect()
}
