//! A trained flow: its config and parameters, inference, and the model file.

use std::collections::HashMap;
use std::path::Path;

use dfdx::tensor_ops::Device;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::cpu::Net;
use crate::params::Layout;
use crate::{Dataset, EngineError, FlowConfig};

/// Metadata key and value that mark a file as a flow model.
const FORMAT_KEY: &str = "format";
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
    pub fn init(cfg: &FlowConfig, seed: u64) -> Result<Flow, EngineError> {
        cfg.validate()?;
        let layout = Layout::new(cfg);
        let params = layout.init(seed);
        Flow::from_parts(cfg.clone(), layout, params)
    }

    pub(crate) fn from_parts(
        config: FlowConfig,
        layout: Layout,
        params: Vec<f32>,
    ) -> Result<Flow, EngineError> {
        if params.len() != layout.total {
            return Err(EngineError::InvalidConfig(format!(
                "the model needs {} parameters, got {}",
                layout.total,
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
        self.layout.total
    }

    /// Every parameter, flat: per layer (lift, each field's fc1 and fc2, head) the weight
    /// `[out, in]` row-major, then the bias.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// `(name, shape)` of every tensor, in the order of [`Flow::params`].
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.layout
            .slots
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

    /// Mean cross-entropy and accuracy on `data`.
    pub fn evaluate(&self, data: &Dataset) -> Result<Evaluation, EngineError> {
        data.validate_for(&self.config)?;
        if data.is_empty() {
            return Err(EngineError::InvalidData(
                "cannot evaluate on an empty data set".into(),
            ));
        }
        let stats = self.net().evaluate(&data.x, &data.y);
        let n = data.len();
        Ok(Evaluation {
            loss: stats.loss_sum / n as f64,
            acc: stats.correct as f64 / n as f64,
            n,
        })
    }

    fn rows_of(&self, x: &[f32]) -> Result<usize, EngineError> {
        let d = self.config.in_dim;
        if !x.len().is_multiple_of(d) {
            return Err(EngineError::InvalidData(format!(
                "{} features is not a whole number of rows of dimension {d}",
                x.len()
            )));
        }
        Ok(x.len() / d)
    }

    /// Logits of row-major inputs `x` (`n * in_dim` values), row-major `n * classes`.
    pub fn predict_logits(&self, x: &[f32]) -> Result<Vec<f32>, EngineError> {
        let rows = self.rows_of(x)?;
        Ok(self.net().logits(x, rows))
    }

    /// [`Flow::predict_logits`] through the device-generic tensor path on `dev`.
    pub fn predict_logits_on<D: Device<f32>>(
        &self,
        dev: &D,
        x: &[f32],
    ) -> Result<Vec<f32>, EngineError> {
        let rows = self.rows_of(x)?;
        crate::tensor::logits(dev, &self.config, &self.layout, &self.params, x, rows)
    }

    /// Writes a safetensors file: one f32 tensor per [`Flow::param_shapes`] entry, the
    /// [`FlowConfig`] as JSON in the metadata. Written to a temporary file, then renamed.
    pub fn save(&self, path: &Path) -> Result<(), EngineError> {
        let bytes: Vec<Vec<u8>> = self
            .layout
            .slots
            .iter()
            .map(|s| {
                self.params[s.offset..s.offset + s.len()]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        let views = self
            .layout
            .slots
            .iter()
            .zip(&bytes)
            .map(|(s, b)| {
                TensorView::new(Dtype::F32, s.shape.clone(), b)
                    .map(|v| (s.name.clone(), v))
                    .map_err(|e| EngineError::format(path, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = serde_json::to_string(&self.config)
            .map_err(|e| EngineError::format(path, e.to_string()))?;
        let meta = HashMap::from([
            (FORMAT_KEY.to_string(), FORMAT.to_string()),
            (CONFIG_KEY.to_string(), config),
        ]);
        let file = safetensors::serialize(views, &Some(meta))
            .map_err(|e| EngineError::format(path, e.to_string()))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, file).map_err(EngineError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(EngineError::io(path))
    }

    /// Reads a file written by [`Flow::save`]; anything else is a `Format` error naming `path`.
    pub fn load(path: &Path) -> Result<Flow, EngineError> {
        let bytes = std::fs::read(path).map_err(EngineError::io(path))?;
        let bad = |m: String| EngineError::format(path, m);
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let meta = header.metadata().as_ref();
        let get = |key: &str| meta.and_then(|m| m.get(key));
        if get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("metadata `{FORMAT_KEY}` is not `{FORMAT}`")));
        }
        let config = get(CONFIG_KEY).ok_or_else(|| bad(format!("no `{CONFIG_KEY}` metadata")))?;
        let config: FlowConfig =
            serde_json::from_str(config).map_err(|e| bad(format!("bad `{CONFIG_KEY}`: {e}")))?;
        config
            .validate()
            .map_err(|e| bad(format!("bad `{CONFIG_KEY}`: {e}")))?;
        let layout = Layout::new(&config);
        if st.len() != layout.slots.len() {
            return Err(bad(format!(
                "expected {} tensors, found {}",
                layout.slots.len(),
                st.len()
            )));
        }
        let mut params = vec![0.0f32; layout.total];
        for slot in &layout.slots {
            let missing = || bad(format!("missing tensor `{}`", slot.name));
            let info = header.info(&slot.name).ok_or_else(missing)?;
            if info.dtype != Dtype::F32 || info.shape != slot.shape {
                return Err(bad(format!(
                    "tensor `{}` is {:?} {:?}, expected F32 {:?}",
                    slot.name, info.dtype, info.shape, slot.shape
                )));
            }
            let t = st.tensor(&slot.name).map_err(|_| missing())?;
            let dst = &mut params[slot.offset..slot.offset + slot.len()];
            for (v, b) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("parameter {i} is not finite")));
        }
        Flow::from_parts(config, layout, params)
    }
}
