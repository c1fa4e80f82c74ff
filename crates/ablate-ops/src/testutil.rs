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
        placement: placement(device),
        resources: Resources::default(),
        retries: 0,
        timeout: None,
        diverged: Default::default(),
        missing: Vec::new(),
        budget: None,
    }
}

/// The placement a scheduler gives a job on `device` (`cpu`, `cuda`, `cuda:1`, `cuda:1,2`).
pub(crate) fn placement(device: &str) -> ablate_run::Placement {
    let (first, rest) = device.split_once(',').unwrap_or((device, ""));
    let device: ablate_spec::Device = first.parse().expect("a device");
    let mut gpus: Vec<u32> = match device {
        ablate_spec::Device::Cuda(Some(n)) => vec![n],
        _ => Vec::new(),
    };
    gpus.extend(
        rest.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().expect("a GPU")),
    );
    ablate_run::Placement {
        device,
        gpus,
        visible: None,
    }
}
