//! The safetensors files every model is stored in: one f32 tensor per parameter slot, a format
//! tag and the model's config (JSON) in the metadata, written to a temporary file and renamed.
//! Each model names its format and config keys and supplies its slots; the checks live here once.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::NnError;

/// A parameter tensor: its name, shape and place in the flat parameter vector.
pub type SlotRef<'a> = (&'a str, &'a [usize], Range<usize>);

/// The metadata key holding the format tag.
pub const FORMAT_KEY: &str = "format";

/// Writes `params` as one tensor per slot; `meta` carries the format tag and config.
///
/// The file is byte-reproducible: the same parameters and metadata give the same bytes (#16).
/// `safetensors::serialize` takes the metadata as a `HashMap` and writes it in that map's
/// random order, so the header is written here, in sorted order: `__metadata__`, then the
/// tensors by name, their data laid out in that order (the layout the format specifies: an
/// 8-byte little-endian header length, the JSON header padded with spaces to 8 bytes, the data).
pub fn write<'a>(
    path: &Path,
    slots: impl Iterator<Item = SlotRef<'a>>,
    params: &[f32],
    meta: BTreeMap<String, String>,
) -> Result<(), NnError> {
    let mut slots: Vec<SlotRef<'a>> = slots.collect();
    slots.sort_by(|a, b| a.0.cmp(b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(meta));
    let mut offset = 0usize;
    for (name, shape, range) in &slots {
        if shape.iter().product::<usize>() != range.len() {
            return Err(NnError::format(
                path,
                format!(
                    "tensor `{name}` has shape {shape:?} but {} values",
                    range.len()
                ),
            ));
        }
        let end = offset + 4 * range.len();
        header.insert(
            (*name).to_owned(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    // serde_json's map is sorted by key: the header's text depends on its contents alone.
    let mut json = serde_json::to_vec(&header).expect("a header of strings and numbers");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut file = Vec::with_capacity(8 + json.len() + offset);
    file.extend_from_slice(&(json.len() as u64).to_le_bytes());
    file.extend_from_slice(&json);
    for (_, _, range) in &slots {
        file.extend(params[range.clone()].iter().flat_map(|v| v.to_le_bytes()));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, file).map_err(NnError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(NnError::io(path))
}

/// A model file read and checked for its format tag; its parameters are read against slots
/// derived from its config.
pub struct ModelFile<'p> {
    path: &'p Path,
    bytes: Vec<u8>,
    pub meta: HashMap<String, String>,
}

impl<'p> ModelFile<'p> {
    pub fn read(path: &'p Path, format: &str) -> Result<Self, NnError> {
        let bytes = std::fs::read(path).map_err(NnError::io(path))?;
        let bad = |m: String| NnError::format(path, m);
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get(FORMAT_KEY).map(String::as_str) != Some(format) {
            return Err(bad(format!("metadata `{FORMAT_KEY}` is not `{format}`")));
        }
        Ok(ModelFile { path, bytes, meta })
    }

    /// The JSON config under `key`, parsed.
    pub fn config<C: serde::de::DeserializeOwned>(&self, key: &str) -> Result<C, NnError> {
        let raw = self
            .meta
            .get(key)
            .ok_or_else(|| self.bad(format!("no `{key}` metadata")))?;
        serde_json::from_str(raw).map_err(|e| self.bad(format!("bad `{key}`: {e}")))
    }

    pub fn bad(&self, message: String) -> NnError {
        NnError::format(self.path, message)
    }

    /// The flat parameters (`total` of them): every slot present with its shape as f32, no
    /// other tensor, every value finite.
    pub fn params<'a>(
        &self,
        slots: impl Iterator<Item = SlotRef<'a>>,
        total: usize,
    ) -> Result<Vec<f32>, NnError> {
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
