use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("I/O error on `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a valid manifest", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{}` changed after its entry was verified", path.display())]
    Changed { path: PathBuf },
    #[error("cannot publish `{path}`: it is not a file of the entry")]
    NotAnOutput { path: String },
    #[error("cannot cache `{name}` = {value}: metrics must be finite numbers")]
    NonFiniteMetric { name: String, value: f64 },
}

impl CacheError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CacheError {
        let path = path.into();
        move |source| CacheError::Io { path, source }
    }
}
