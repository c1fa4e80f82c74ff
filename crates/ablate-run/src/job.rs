use ablate_cache::{InputRef, InstanceKey, KeyInput};
use ablate_plan::{Plan, PlanIndex};
use ablate_spec::{OnDiverge, Params, Resources, Value};
use serde::{Deserialize, Serialize};

/// Everything an executor needs to compute one instance, self-contained and serialisable (a
/// Slurm task reads it back from the shared cache).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub pipeline: String,
    pub stage: String,
    pub id: String,
    pub label: String,
    pub labels: Vec<(String, Value)>,
    pub key: InstanceKey,
    /// Op, version, params, input keys, deps: what the key was computed from.
    pub key_input: KeyInput,
    pub inputs: Vec<JobInput>,
    /// Where it computes: its stage's device, then the GPUs the local scheduler gave it.
    pub placement: crate::Placement,
    pub resources: Resources,
    pub retries: u32,
    /// Wall-clock limit of one attempt: its process group is killed and the attempt fails.
    #[serde(default)]
    pub timeout: Option<std::time::Duration>,
    /// Whether a divergence fails the attempt or is recorded as the result (`diverged:`).
    #[serde(default)]
    pub diverged: OnDiverge,
    /// The inputs of a report that did not finish (failed, or skipped), which it marks instead
    /// of showing: not in `inputs`, since they have no entry. Empty but for a report that is
    /// not `strict` and runs on a partial set (its key then says so, see [`Job::partial`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingInput>,
    /// Early stopping (`early_stop:`, issue 24): compute only up to this progress step (an
    /// epoch of `train.flow`, a step of `train.lm` and `cmd`), leave a checkpoint that a later
    /// attempt with a larger budget (or none) resumes from, and say where it stopped
    /// ([`crate::OpOutput::stopped_at`]). `None`: the whole computation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
}

/// An input of a report that has no result: the report shows its cells as missing, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MissingInput {
    pub stage: String,
    pub id: String,
    pub op: String,
    pub key: InstanceKey,
    pub labels: Vec<(String, Value)>,
    pub why: Unfinished,
    /// The instance upstream whose failure or divergence skipped this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
}

/// Why an input has no result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unfinished {
    /// It failed (after its retries).
    Failed,
    /// It was skipped because something upstream of it failed.
    Skipped,
    /// It was skipped because something upstream of it diverged (a diverged model is a
    /// result, but nothing is computed from it): a report shows it as `diverged`.
    Diverged,
    /// It was skipped because early stopping pruned what it maps over: a report shows it as
    /// `pruned`.
    Pruned,
}

impl Unfinished {
    /// The word a report shows for it: `failed`, `skipped`, `diverged`, `pruned`.
    pub fn name(self) -> &'static str {
        match self {
            Unfinished::Failed => "failed",
            Unfinished::Skipped => "skipped",
            Unfinished::Diverged => "diverged",
            Unfinished::Pruned => "pruned",
        }
    }
}

/// One input of a job: an upstream instance whose entry is complete in the cache.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobInput {
    pub stage: String,
    pub id: String,
    pub op: String,
    pub key: InstanceKey,
    pub labels: Vec<(String, Value)>,
}

impl Job {
    pub fn from_plan(plan: &Plan, id: PlanIndex) -> Job {
        let inst = plan.instance(id);
        Job {
            pipeline: plan.pipeline().to_owned(),
            stage: inst.stage.to_string(),
            id: inst.id.clone(),
            label: inst.label.clone(),
            labels: inst.labels.clone(),
            key: inst.key,
            key_input: inst.key_input.clone(),
            inputs: plan
                .inputs(id)
                .map(|(_, i)| JobInput {
                    stage: i.stage.to_string(),
                    id: i.id.clone(),
                    op: i.op.clone(),
                    key: i.key,
                    labels: i.labels.clone(),
                })
                .collect(),
            placement: crate::Placement::on(inst.device),
            resources: inst.resources,
            retries: inst.retries,
            timeout: inst.timeout,
            diverged: inst.diverged,
            missing: Vec::new(),
            budget: None,
        }
    }

    /// The job of a report that runs although some of its inputs did not finish: `missing`
    /// leave its inputs for [`Job::missing`], and the key changes with them. A report built
    /// from part of its inputs must never be served for the complete one (the run after the
    /// failed instance is fixed would show the partial table as a cache hit), so its key input
    /// names each missing input with why it is missing (`InputRef::name`, which reports do not
    /// use otherwise): another key, which the plan never looks up, and which a full
    /// verification recomputes from the manifest like any other.
    pub fn partial(plan: &Plan, id: PlanIndex, missing: &[(PlanIndex, Unfinished, String)]) -> Job {
        let mut job = Job::from_plan(plan, id);
        if missing.is_empty() {
            return job;
        }
        let mut gone = Vec::with_capacity(missing.len());
        for (input, why, because) in missing {
            let i = plan.instance(*input);
            gone.push(MissingInput {
                stage: i.stage.to_string(),
                id: i.id.clone(),
                op: i.op.clone(),
                key: i.key,
                labels: i.labels.clone(),
                why: *why,
                because: (*why != Unfinished::Failed).then(|| because.clone()),
            });
        }
        job.inputs.retain(|i| !gone.iter().any(|g| g.key == i.key));
        for r in &mut job.key_input.inputs {
            if let Some(g) = gone.iter().find(|g| g.key == r.key) {
                r.name = Some(format!("missing: {}", g.why.name()));
            }
        }
        // A gather's inputs are a set, sorted (see the plan's builder).
        job.key_input
            .inputs
            .sort_by(|a: &InputRef, b: &InputRef| (&a.name, a.key).cmp(&(&b.name, b.key)));
        job.key = job.key_input.key();
        job.missing = gone;
        job
    }

    pub fn op(&self) -> &str {
        &self.key_input.op
    }

    pub fn params(&self) -> &Params {
        &self.key_input.params
    }
}
