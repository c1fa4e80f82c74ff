use std::path::PathBuf;

/// Everything that can go wrong while building, training, evaluating or storing a model.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// The loss or the gradient of a training batch was NaN or infinite; `epoch` and `batch`
    /// are 1-based.
    #[error(
        "training diverged: {} at epoch {epoch}, batch {batch} (try a smaller learning rate)",
        non_finite(*loss, *grad_norm)
    )]
    NonFinite {
        epoch: usize,
        batch: usize,
        loss: f32,
        grad_norm: f32,
    },
    /// The loss or gradient of a language model's training step (1-based) was NaN or infinite.
    #[error(
        "training diverged: the loss became {loss} and the gradient norm {grad_norm} at step {step} (try a smaller learning rate or a lower `clip`)"
    )]
    NonFiniteStep {
        step: usize,
        loss: f32,
        grad_norm: f32,
    },
    /// The observer asked training to stop.
    #[error("training was cancelled")]
    Cancelled,
    /// The data set does not fit the model or is malformed.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// A model or training parameter is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing a file failed.
    #[error("I/O error on `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file exists but is not a model this crate wrote.
    #[error("`{}` is not a valid model file: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// The dfdx device reported an error (a CUDA failure).
    #[error("device error: {0}")]
    Device(String),
    /// The device could not allocate memory (a GPU shared by too many runs, or too large a
    /// batch); the message is the device's own.
    #[error("the device ran out of memory ({0})")]
    OutOfMemory(String),
}

/// What became non-finite: the loss, or (the loss still finite) the gradient.
fn non_finite(loss: f32, grad_norm: f32) -> String {
    if loss.is_finite() {
        format!("the gradient norm became {grad_norm}")
    } else {
        format!("the loss became {loss}")
    }
}

/// A dfdx device's error (or a panic message from inside dfdx) as an [`NnError`]: an
/// allocation failure is [`NnError::OutOfMemory`], anything else [`NnError::Device`].
pub fn device_error(e: impl std::fmt::Display) -> NnError {
    let message = e.to_string();
    // The CUDA driver's, cuBLAS's and dfdx's CPU device's names for a failed allocation.
    let oom = ["OUT_OF_MEMORY", "ALLOC_FAILED", "OutOfMemory"];
    if oom.iter().any(|m| message.contains(m)) {
        NnError::OutOfMemory(message)
    } else {
        NnError::Device(message)
    }
}

impl NnError {
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> NnError + '_ {
        move |source| NnError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn format(path: &std::path::Path, message: impl Into<String>) -> NnError {
        NnError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Runs `body`, which drives a dfdx device, turning a panic inside dfdx (which unwraps some of
/// its allocations and copies, on the GPU as on the CPU) into an error of this run: a GPU out
/// of memory fails the one evaluation or training that hit it, with a message that says so.
pub fn catching<R>(body: impl FnOnce() -> Result<R, NnError>) -> Result<R, NnError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(match device_error(&message) {
            NnError::Device(m) => NnError::Device(format!("dfdx panicked: {m}")),
            oom => oom,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_failure_is_out_of_memory_and_names_the_device_message() {
        let driver = r#"DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")"#;
        for m in [
            driver,
            "CublasError(CUBLAS_STATUS_ALLOC_FAILED)",
            "CpuError::OutOfMemory",
        ] {
            let e = device_error(m);
            assert!(matches!(e, NnError::OutOfMemory(_)), "{m}: {e:?}");
            assert!(e.to_string().contains(m), "{e}");
        }
        let e =
            device_error("DriverError(CUDA_ERROR_LAUNCH_FAILED, \"unspecified launch failure\")");
        assert!(matches!(e, NnError::Device(_)), "{e:?}");
    }

    #[test]
    fn a_panic_inside_the_device_becomes_this_runs_error() {
        let e = catching::<()>(|| {
            panic!("called `Result::unwrap()` on an `Err` value: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")")
        })
        .unwrap_err();
        assert!(matches!(e, NnError::OutOfMemory(_)), "{e:?}");
        assert!(
            e.to_string().starts_with("the device ran out of memory"),
            "{e}"
        );
        let e = catching::<()>(|| panic!("index out of bounds")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "device error: dfdx panicked: index out of bounds"
        );
        assert_eq!(catching(|| Ok(3)).unwrap(), 3);
        assert!(matches!(
            catching::<()>(|| Err(NnError::Cancelled)),
            Err(NnError::Cancelled)
        ));
    }
}
