use ablate_cache::{InstanceKey, KeyInput};
use ablate_plan::{InstanceId, Plan};
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
    pub device: String,
    pub resources: Resources,
    pub retries: u32,
    /// Wall-clock limit of one attempt: its process group is killed and the attempt fails.
    #[serde(default)]
    pub timeout: Option<std::time::Duration>,
    /// Whether a divergence fails the attempt or is recorded as the result (`diverged:`).
    #[serde(default)]
    pub diverged: OnDiverge,
    /// The GPUs a program started by this job may see, as `CUDA_VISIBLE_DEVICES` (`"1"`,
    /// `"0,2"`; empty: none), when the local scheduler assigns this machine's GPUs; `None`
    /// where something else does (a Slurm allocation) or there are none to manage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_gpus: Option<String>,
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
    pub fn from_plan(plan: &Plan, id: InstanceId) -> Job {
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
            device: inst.device.to_string(),
            resources: inst.resources,
            retries: inst.retries,
            timeout: inst.timeout,
            diverged: inst.diverged,
            visible_gpus: None,
        }
    }

    pub fn op(&self) -> &str {
        &self.key_input.op
    }

    pub fn params(&self) -> &Params {
        &self.key_input.params
    }
}
