//! A [`Backend`] opened for a training or an evaluation: the CPU kernels with their thread
//! count, or a dfdx device (its CUDA device in a `cuda` build), opened once and used by every
//! step or forward pass, so a GPU's context and cuBLAS handle are set up once per run, not per
//! batch. The one place a dfdx device is opened.

use crate::EngineError;
use crate::config::{Backend, ExecOptions};

/// Where a run's arithmetic runs; see [`Runtime::open`].
pub struct Runtime {
    pub(crate) kind: Kind,
}

pub(crate) enum Kind {
    Cpu {
        threads: usize,
    },
    Dfdx(dfdx::tensor::Cpu),
    #[cfg(feature = "cuda")]
    Cuda {
        ordinal: u32,
        dev: dfdx::tensor::Cuda,
    },
}

impl Runtime {
    /// This crate's CPU kernels on `threads` threads (at least one).
    pub fn cpu(threads: usize) -> Runtime {
        Runtime {
            kind: Kind::Cpu {
                threads: threads.max(1),
            },
        }
    }

    /// Opens `exec.backend`: for [`Backend::Cuda`], GPU `N` (an error naming it if it cannot be
    /// opened).
    pub fn open(exec: &ExecOptions) -> Result<Runtime, EngineError> {
        exec.validate()?;
        let kind = match exec.backend {
            Backend::Cpu => Kind::Cpu {
                threads: exec.threads,
            },
            Backend::Dfdx => Kind::Dfdx(dfdx::tensor::Cpu::default()),
            #[cfg(feature = "cuda")]
            // The device's own random generator is never used: parameters start on the host.
            Backend::Cuda(ordinal) => Kind::Cuda {
                ordinal,
                dev: dfdx::tensor::Cuda::try_build(ordinal as usize, 0).map_err(|e| {
                    EngineError::Device(format!("cannot open GPU `cuda:{ordinal}`: {e:?}"))
                })?,
            },
        };
        Ok(Runtime { kind })
    }

    /// The backend this runtime runs.
    pub fn backend(&self) -> Backend {
        match &self.kind {
            Kind::Cpu { .. } => Backend::Cpu,
            Kind::Dfdx(_) => Backend::Dfdx,
            #[cfg(feature = "cuda")]
            Kind::Cuda { ordinal, .. } => Backend::Cuda(*ordinal),
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Runtime({:?})", self.backend())
    }
}
