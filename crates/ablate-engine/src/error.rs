use std::path::PathBuf;

/// Everything that can go wrong while building, training, evaluating or storing a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The loss of a training batch was NaN or infinite; `epoch` and `batch` are 1-based.
    #[error(
        "training diverged: the loss became non-finite at epoch {epoch}, batch {batch} (try a smaller learning rate)"
    )]
    NonFinite { epoch: usize, batch: usize },
    /// The loss or gradient of a language model's training step (1-based) was NaN or infinite.
    #[error(
        "training diverged: the loss or its gradient became non-finite at step {step} (try a smaller learning rate or a lower `clip`)"
    )]
    NonFiniteStep { step: usize },
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
    /// The dfdx device reported an error (out of memory, a CUDA failure).
    #[error("device error: {0}")]
    Device(String),
}

impl EngineError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
        move |source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn format(path: &std::path::Path, message: impl Into<String>) -> EngineError {
        EngineError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
