//! What can go wrong between ablate and Slurm, typed (issue 24: these were `String`s). Each
//! variant that touches a file carries its path; causes are chained with `#[source]`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "failed to run `{program}`: it is not installed or not on PATH (the Slurm executor \
         needs the Slurm client tools sbatch, squeue, sinfo and scancel on this machine)"
    )]
    NotInstalled { program: String },
    #[error("failed to run `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The tool ran and said no: its stderr is the reason.
    #[error("`{program}` failed ({status}): {stderr} (the command was `{command}`)")]
    Refused {
        program: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("failed to read a job id in sbatch's answer `{answer}`")]
    JobId { answer: String },
    #[error("failed to create `{path}`")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the batch file `{path}`")]
    ReadBatch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read `{path}` as a batch file")]
    BadBatch {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to find task {index} in `{path}`: it has {tasks} task(s)")]
    NoSuchTask {
        path: PathBuf,
        index: usize,
        tasks: usize,
    },
}
