//! A [`Backend`] opened for a training or an evaluation: the CPU kernels with their thread
//! count, or a dfdx device (its CUDA device in a `cuda` build), opened once and used by every
//! step or forward pass, so a GPU's context and cuBLAS handle are set up once per run, not per
//! batch. The one place a dfdx device is opened.

use serde::{Deserialize, Serialize};

use crate::NnError;

/// Where a run's arithmetic runs; see [`Runtime::open`].
pub struct Runtime {
    kind: Kind,
}

/// The opened backend, for the models' `match`.
pub enum Kind {
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
    pub fn open(exec: &ExecOptions) -> Result<Runtime, NnError> {
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
                    NnError::Device(format!("cannot open GPU `cuda:{ordinal}`: {e:?}"))
                })?,
            },
        };
        Ok(Runtime { kind })
    }

    /// The opened backend.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The opened backend, by value (a training run takes its device).
    pub fn into_kind(self) -> Kind {
        self.kind
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

/// Which implementation runs the model's arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// CPU kernels written for this model: `gemm` matrix products and fused, vectorised
    /// element-wise loops over buffers allocated once, the batch split into shards that run on
    /// `threads` threads. Several times faster than the tensor path at the paper's sizes, where
    /// dfdx's per-op overhead dominates; tested equal to [`Backend::Dfdx`] within rounding.
    #[default]
    Cpu,
    /// The device-generic path: the same forward and hand-written backward pass as dfdx tensor
    /// ops (no tape), run here on dfdx's `Cpu` device. A CUDA build runs this path.
    Dfdx,
    /// The device-generic path on GPU `N` (dfdx's `Cuda` device): builds with the `cuda`
    /// feature only.
    #[cfg(feature = "cuda")]
    Cuda(u32),
}

/// How many GPUs the CUDA driver sees, or why it sees none.
#[cfg(feature = "cuda")]
pub fn cuda_devices() -> Result<usize, String> {
    use cudarc::driver::result;
    result::init().map_err(|e| format!("the CUDA driver did not start ({e:?})"))?;
    result::device::get_count()
        .map(|n| n.max(0) as usize)
        .map_err(|e| format!("the CUDA driver could not count its GPUs ({e:?})"))
}

/// How to run a training or evaluation; none of it changes the results of [`Backend::Cpu`]:
/// the batch is always split into the same shards and their gradients summed in the same
/// order, whatever the thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOptions {
    /// Threads for [`Backend::Cpu`] (at least 1). More than the shards of a batch are idle.
    pub threads: usize,
    pub backend: Backend,
}

impl Default for ExecOptions {
    /// One thread: a sweep gains more from running instances side by side (performance.md).
    fn default() -> Self {
        ExecOptions {
            threads: 1,
            backend: Backend::Cpu,
        }
    }
}

impl ExecOptions {
    pub fn validate(&self) -> Result<(), NnError> {
        if self.threads == 0 {
            return Err(NnError::InvalidConfig(
                "`threads` must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
