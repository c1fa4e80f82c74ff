//! A trained flow: its config and parameters, inference, and the model file.

use std::collections::BTreeMap;
use std::path::Path;

use dfdx::tensor_ops::Device;

use crate::cpu::Net;
use crate::params::Layout;
use crate::tensor;
use crate::{Dataset, FlowConfig, NnError};
use ablate_nn::catching;
use ablate_nn::safetensors::{self as model_file, FORMAT_KEY, ModelFile};
use ablate_nn::{Kind, Runtime};

/// Metadata key and value that mark a file as a flow model.
const FORMAT: &str = "ablate-flow/1";
/// Metadata key holding the [`FlowConfig`] as JSON.
const CONFIG_KEY: &str = "flow_config";

/// Loss and accuracy on a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    pub acc: f64,
    /// Examples evaluated.
    pub n: usize,
}

/// A residual flow classifier with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    config: FlowConfig,
    layout: Layout,
    params: Vec<f32>,
}

impl Flow {
    /// A model initialised from `seed` as training would start it (untrained).
    pub fn init(cfg: &FlowConfig, seed: u64) -> Result<Flow, NnError> {
        cfg.validate()?;
        let layout = Layout::new(cfg);
        let params = layout.init(seed);
        Flow::from_parts(cfg.clone(), layout, params)
    }

    pub(crate) fn from_parts(
        config: FlowConfig,
        layout: Layout,
        params: Vec<f32>,
    ) -> Result<Flow, NnError> {
        if params.len() != layout.total() {
            return Err(NnError::InvalidConfig(format!(
                "the model needs {} parameters, got {}",
                layout.total(),
                params.len()
            )));
        }
        Ok(Flow {
            config,
            layout,
            params,
        })
    }

    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.layout.total()
    }

    /// The parameter count of a flow of `cfg` (a valid config), without building one.
    pub fn num_params_of(cfg: &FlowConfig) -> usize {
        Layout::new(cfg).total()
    }

    /// Every parameter, flat: per layer (lift, each field's fc1 and fc2, head) the weight
    /// `[out, in]` row-major, then the bias.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// `(name, shape)` of every tensor, in the order of [`Flow::params`].
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.layout
            .store
            .slots()
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .collect()
    }

    fn net(&self) -> Net<'_> {
        Net {
            cfg: &self.config,
            layout: &self.layout,
            p: &self.params,
        }
    }

    /// Mean cross-entropy and accuracy on `data` (CPU kernels, one thread).
    pub fn evaluate(&self, data: &Dataset) -> Result<Evaluation, NnError> {
        self.evaluate_on(data, &Runtime::cpu(1))
    }

    /// [`Flow::evaluate`] with the forward passes on `rt` (a GPU in a `cuda` build); the loss
    /// of each row is taken on the host, so backends differ only by the logits' rounding.
    pub fn evaluate_on(&self, data: &Dataset, rt: &Runtime) -> Result<Evaluation, NnError> {
        data.validate_for(&self.config)?;
        if data.is_empty() {
            return Err(NnError::InvalidData(
                "cannot evaluate on an empty data set".into(),
            ));
        }
        let (cfg, layout, p, x, y) = (&self.config, &self.layout, &self.params, &data.x, &data.y);
        let stats = match rt.kind() {
            Kind::Cpu { .. } => self.net().evaluate(x, y),
            Kind::Dfdx(dev) => catching(|| tensor::eval_stats(dev, cfg, layout, p, x, y))?,
            #[cfg(feature = "cuda")]
            Kind::Cuda { dev, .. } => catching(|| tensor::eval_stats(dev, cfg, layout, p, x, y))?,
        };
        let n = data.len();
        Ok(Evaluation {
            loss: stats.loss_sum / n as f64,
            acc: stats.correct as f64 / n as f64,
            n,
        })
    }

    fn rows_of(&self, x: &[f32]) -> Result<usize, NnError> {
        let d = self.config.in_dim;
        if !x.len().is_multiple_of(d) {
            return Err(NnError::InvalidData(format!(
                "{} features is not a whole number of rows of dimension {d}",
                x.len()
            )));
        }
        Ok(x.len() / d)
    }

    /// Logits of row-major inputs `x` (`n * in_dim` values), row-major `n * classes`.
    pub fn predict_logits(&self, x: &[f32]) -> Result<Vec<f32>, NnError> {
        let rows = self.rows_of(x)?;
        Ok(self.net().logits(x, rows))
    }

    /// [`Flow::predict_logits`] through the device-generic tensor path on `dev`.
    pub fn predict_logits_on<D: Device<f32>>(
        &self,
        dev: &D,
        x: &[f32],
    ) -> Result<Vec<f32>, NnError> {
        let rows = self.rows_of(x)?;
        crate::tensor::logits(dev, &self.config, &self.layout, &self.params, x, rows)
    }

    /// Writes a safetensors file: one f32 tensor per [`Flow::param_shapes`] entry, the
    /// [`FlowConfig`] as JSON in the metadata. Written to a temporary file, then renamed.
    pub fn save(&self, path: &Path) -> Result<(), NnError> {
        let config = serde_json::to_string(&self.config)
            .map_err(|e| NnError::format(path, e.to_string()))?;
        let meta = BTreeMap::from([
            (FORMAT_KEY.to_string(), FORMAT.to_string()),
            (CONFIG_KEY.to_string(), config),
        ]);
        model_file::write(path, self.layout.store.file_slots(), &self.params, meta)
    }

    /// Reads a file written by [`Flow::save`]; anything else is a `Format` error naming `path`.
    pub fn load(path: &Path) -> Result<Flow, NnError> {
        let file = ModelFile::read(path, FORMAT)?;
        let config: FlowConfig = file.config(CONFIG_KEY)?;
        config
            .validate()
            .map_err(|e| file.bad(format!("bad `{CONFIG_KEY}`: {e}")))?;
        let layout = Layout::new(&config);
        let params = file.params(layout.store.file_slots(), layout.total())?;
        Flow::from_parts(config, layout, params)
    }
}
