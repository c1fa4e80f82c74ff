//! What the ops' unit tests share: a job as the runner would hand it to an op.

use ablate_cache::{HASH_SCHEME, KeyInput};
use ablate_run::{Job, JobInput};
use ablate_spec::{Params, Resources};

/// A job of `op` (version 1) with `params` over `inputs`, on `device`.
pub(crate) fn job(op: &str, params: Params, inputs: Vec<JobInput>, device: &str) -> Job {
    let key_input = KeyInput {
        scheme: HASH_SCHEME,
        op: op.into(),
        op_version: 1,
        params,
        inputs: Vec::new(),
        deps: Vec::new(),
    };
    Job {
        pipeline: "p".into(),
        stage: "s".into(),
        id: "s".into(),
        label: String::new(),
        labels: Vec::new(),
        key: key_input.key(),
        key_input,
        inputs,
        device: device.into(),
        resources: Resources::default(),
        retries: 0,
        timeout: None,
        diverged: Default::default(),
        visible_gpus: None,
        missing: Vec::new(),
        budget: None,
    }
}
