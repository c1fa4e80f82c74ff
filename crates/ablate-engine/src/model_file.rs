//! The safetensors files every model is stored in: one f32 tensor per parameter slot, a format
//! tag and the model's config (JSON) in the metadata, written to a temporary file and renamed.
//! Each model names its format and config keys and supplies its slots; the checks live here once.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::EngineError;

/// A parameter tensor: its name, shape and place in the flat parameter vector.
pub(crate) type SlotRef<'a> = (&'a str, &'a [usize], Range<usize>);

/// The metadata key holding the format tag.
pub(crate) const FORMAT_KEY: &str = "format";

/// Writes `params` as one tensor per slot; `meta` carries the format tag and config.
pub(crate) fn write<'a>(
    path: &Path,
    slots: impl Iterator<Item = SlotRef<'a>>,
    params: &[f32],
    meta: HashMap<String, String>,
) -> Result<(), EngineError> {
    let slots: Vec<SlotRef<'a>> = slots.collect();
    let bytes: Vec<Vec<u8>> = slots
        .iter()
        .map(|(_, _, r)| {
            params[r.clone()]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let views = slots
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.to_vec(), b)
                .map(|v| (name.to_string(), v))
                .map_err(|e| EngineError::format(path, e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let file = safetensors::serialize(views, &Some(meta))
        .map_err(|e| EngineError::format(path, e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, file).map_err(EngineError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(EngineError::io(path))
}

/// A model file read and checked for its format tag; its parameters are read against slots
/// derived from its config.
pub(crate) struct ModelFile<'p> {
    path: &'p Path,
    bytes: Vec<u8>,
    pub meta: HashMap<String, String>,
}

impl<'p> ModelFile<'p> {
    pub(crate) fn read(path: &'p Path, format: &str) -> Result<Self, EngineError> {
        let bytes = std::fs::read(path).map_err(EngineError::io(path))?;
        let bad = |m: String| EngineError::format(path, m);
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get(FORMAT_KEY).map(String::as_str) != Some(format) {
            return Err(bad(format!("metadata `{FORMAT_KEY}` is not `{format}`")));
        }
        Ok(ModelFile { path, bytes, meta })
    }

    /// The JSON config under `key`, parsed.
    pub(crate) fn config<C: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<C, EngineError> {
        let raw = self
            .meta
            .get(key)
            .ok_or_else(|| self.bad(format!("no `{key}` metadata")))?;
        serde_json::from_str(raw).map_err(|e| self.bad(format!("bad `{key}`: {e}")))
    }

    pub(crate) fn bad(&self, message: String) -> EngineError {
        EngineError::format(self.path, message)
    }

    /// The flat parameters (`total` of them): every slot present with its shape as f32, no
    /// other tensor, every value finite.
    pub(crate) fn params<'a>(
        &self,
        slots: impl Iterator<Item = SlotRef<'a>>,
        total: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| self.bad(format!("{e:?}")))?;
        let slots: Vec<SlotRef<'a>> = slots.collect();
        if st.len() != slots.len() {
            return Err(self.bad(format!(
                "expected {} tensors, found {}",
                slots.len(),
                st.len()
            )));
        }
        let mut params = vec![0.0f32; total];
        for (name, shape, range) in slots {
            let t = st
                .tensor(name)
                .map_err(|_| self.bad(format!("missing tensor `{name}`")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(self.bad(format!(
                    "tensor `{name}` is {:?} {:?}, expected F32 {:?}",
                    t.dtype(),
                    t.shape(),
                    shape
                )));
            }
            for (v, b) in params[range].iter_mut().zip(t.data().chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            return Err(self.bad(format!("parameter {i} is not finite")));
        }
        Ok(params)
    }
}
