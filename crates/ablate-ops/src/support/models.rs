//! The glue between an op and the models: an input's artifact, the job's device as a
//! backend, the model core's errors as op errors, and a training op's progress.

use std::ops::ControlFlow;
use std::path::PathBuf;

use ablate_models::{Backend, ExecOptions, NnError, Runtime};
use ablate_run::{OpContext, OpError, Progress};

/// Shows a training op's progress (step or epoch of `total`, and its loss); `Break` once the run
/// is cancelled.
pub(crate) fn training_progress(
    ctx: &OpContext<'_>,
    step: usize,
    total: usize,
    loss: f32,
) -> ControlFlow<()> {
    ctx.progress(Progress {
        step: step as u64,
        total: total as u64,
        loss: Some(f64::from(loss)),
        message: None,
    });
    if ctx.is_cancelled() {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

/// The file `name` of the nearest input that has one (an input's inputs included).
pub(crate) fn artifact(ctx: &OpContext<'_>, name: &str) -> Result<PathBuf, OpError> {
    ctx.find_artifact(name)?.ok_or_else(|| {
        OpError::msg(format!(
            "no input of `{}` (nor their inputs) has a `{name}`; check its `needs`",
            ctx.job.stage
        ))
    })
}

/// A model error ([`NnError`]) as an op's: cancellation stays cancellation, and running out of
/// GPU memory says how to make room.
pub(crate) fn model_error(e: NnError) -> OpError {
    match e {
        NnError::Cancelled => OpError::Cancelled,
        oom @ NnError::OutOfMemory(_) => OpError::msg(format!(
            "{oom}: give the stage more of a GPU (a larger `resources.gpus`, so fewer instances \
             share one), or a smaller model or batch"
        )),
        other => OpError::with("the model code failed", other),
    }
}

/// The backend of an op on its job's `device`: the core's CPU kernels on `cpu`;
/// dfdx's CUDA device on `cuda:N` (the first of `cuda:N,M`; `cuda` alone is the first visible
/// GPU, as on a Slurm node) in a build with the `cuda` feature.
pub(crate) fn backend(ctx: &OpContext<'_>) -> Result<Backend, OpError> {
    // A multi-GPU share's device is the first of its GPUs: the one an op computes on.
    match ctx.job.placement.device {
        ablate_spec::Device::Cpu => Ok(Backend::Cpu),
        #[cfg(feature = "cuda")]
        ablate_spec::Device::Cuda(n) => Ok(Backend::Cuda(n.unwrap_or(0))),
        #[cfg(not(feature = "cuda"))]
        ablate_spec::Device::Cuda(_) => Err(OpError::msg(format!(
            "`{}` cannot run on device `{}`: this build of ablate has no CUDA support \
             (build it with `just build-cuda`, or run with `--device cpu`)",
            ctx.job.op(),
            ctx.job.placement.name()
        ))),
    }
}

/// The [`backend`] of an evaluation op, opened (a GPU's context set up once for the op).
pub(crate) fn runtime(ctx: &OpContext<'_>) -> Result<Runtime, OpError> {
    Runtime::open(&ExecOptions {
        threads: ctx.threads(),
        backend: backend(ctx)?,
    })
    .map_err(model_error)
}

#[cfg(test)]
mod tests {
    use ablate_cache::Store;
    use ablate_run::{CancelToken, OpContext};

    use super::*;

    /// The backend a job's device names, or the error an op fails with.
    fn backend_of(op: &str, device: &str) -> Result<Backend, String> {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(&root.path().join("cache")).unwrap();
        let job = crate::testutil::job(op, Default::default(), Vec::new(), device);
        let (cancel, progress) = (CancelToken::new(), |_: Progress| {});
        let ctx = OpContext::new(
            &job,
            root.path(),
            &store,
            root.path(),
            1,
            &progress,
            &cancel,
        );
        backend(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn a_job_runs_on_the_device_it_names_or_says_why_it_cannot() {
        assert_eq!(backend_of("eval.lm", "cpu"), Ok(Backend::Cpu));
        // The scheduler names a multi-GPU share `cuda:N,M`; the op computes on the first.
        // (`cuda` alone, as on a Slurm node, is the first visible GPU.)
        for (device, _ordinal) in [("cuda", 0), ("cuda:1", 1), ("cuda:1,2", 1)] {
            let got = backend_of("eval.flow", device);
            #[cfg(feature = "cuda")]
            assert_eq!(got, Ok(Backend::Cuda(_ordinal)), "{device}");
            #[cfg(not(feature = "cuda"))]
            {
                let e = got.unwrap_err();
                assert!(
                    e.contains(&format!("`eval.flow` cannot run on device `{device}`"))
                        && e.contains("just build-cuda")
                        && e.contains("--device cpu"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn running_out_of_gpu_memory_says_how_to_make_room() {
        let e = model_error(NnError::OutOfMemory(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY)".into(),
        ))
        .to_string();
        assert!(
            e.starts_with("the device ran out of memory (DriverError(CUDA_ERROR_OUT_OF_MEMORY))")
                && e.contains("`resources.gpus`"),
            "{e}"
        );
    }
}
