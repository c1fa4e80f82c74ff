//! The built-in trainers' checkpoints (early stopping, #24): a run stopped at its budget leaves
//! one in the instance's checkpoint directory, and every attempt first looks there.
//!
//! A checkpoint is tagged with the op, the instance key (a digest of the op's version, params
//! and inputs: everything the training is a function of) and the backend kind (the CPU kernels
//! and the tensor path round differently), so a checkpoint of anything else is never resumed.

use ablate_models::{Backend, Checkpoint, Found};
use ablate_run::{OpContext, OpError, Progress};

/// The file in the checkpoint directory.
pub(crate) const CHECKPOINT_FILE: &str = "train.ckpt";

/// What a checkpoint of `op` run by `ctx` on `backend` is tagged with.
pub(crate) fn tag(ctx: &OpContext<'_>, op: &str, backend: Backend) -> String {
    let kind = match backend {
        Backend::Cpu => "cpu",
        Backend::Dfdx => "dfdx",
        #[cfg(feature = "cuda")]
        Backend::Cuda(_) => "cuda",
    };
    format!("{op} {} {kind}", ctx.job.key.to_hex())
}

/// The checkpoint `ctx`'s instance left, if it is one of `tag` and `usable` accepts it (it
/// decodes what the op needs); one that cannot be used is ignored, and the progress line says
/// so (`total`: the run's length, for that line).
pub(crate) fn load<T>(
    ctx: &OpContext<'_>,
    tag: &str,
    total: u64,
    usable: impl FnOnce(&Checkpoint) -> Result<T, String>,
) -> Option<T> {
    let path = ctx.checkpoint_dir().join(CHECKPOINT_FILE);
    let why = match Checkpoint::read(&path, tag) {
        Found::Nothing => return None,
        Found::Usable(c) => match usable(&c) {
            Ok(t) => return Some(t),
            Err(why) => why,
        },
        Found::Unusable(why) => why,
    };
    ctx.progress(Progress {
        step: 0,
        total,
        loss: None,
        message: Some(format!(
            "ignoring the checkpoint `{}` ({why}): training from the start",
            path.display()
        )),
    });
    None
}

/// Writes `c` as the instance's checkpoint (atomically: the previous one, or none, stays until
/// the new one is whole).
pub(crate) fn save(ctx: &OpContext<'_>, c: &Checkpoint) -> Result<(), OpError> {
    let dir = ctx.checkpoint_dir();
    std::fs::create_dir_all(&dir).map_err(|e| {
        OpError::with(
            format!(
                "failed to create the checkpoint directory `{}`",
                dir.display()
            ),
            e,
        )
    })?;
    c.write(&dir.join(CHECKPOINT_FILE))
        .map_err(|e| OpError::with("failed to write the checkpoint", e))
}

/// Removes the instance's checkpoint: a run that diverged leaves nothing to resume from.
pub(crate) fn discard(ctx: &OpContext<'_>) {
    let _ = std::fs::remove_file(ctx.checkpoint_dir().join(CHECKPOINT_FILE));
}

/// Says where a run resumes (`unit`: epoch or step).
pub(crate) fn say_resumed(ctx: &OpContext<'_>, step: u64, total: u64, unit: &str) {
    ctx.progress(Progress {
        step,
        total,
        loss: None,
        message: Some(format!("resuming from its checkpoint at {unit} {step}")),
    });
}
