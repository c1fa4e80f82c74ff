//! Checkpoints a longer run resumes from (early stopping, #24): a training run stopped at a
//! step leaves its whole state — parameters, the optimizer's moments and step count, and
//! whatever the caller adds (its logs so far, its data stream's position) — so that resuming
//! gives bit for bit what one uninterrupted run gives.
//!
//! The file is small and self-checking: a magic line, a format version, a JSON header (the
//! caller's `tag` naming what was trained, the step, the arrays' names, types and lengths),
//! the arrays' little-endian bytes, and an FNV-1a checksum of everything before it. Floats
//! are stored as their bits (no decimal round trip). It is written to a temporary file and
//! renamed, so a reader sees the old checkpoint or the new one, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::NnError;
use crate::optim::AdamState;

/// The format version this build writes and reads; a checkpoint of another is not resumed.
pub const CHECKPOINT_FORMAT: u32 = 1;

const MAGIC: &[u8; 8] = b"ablateck";

/// The state of one model's training after `step` steps: everything the core's loop and
/// optimizer need to go on exactly as if they had not stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Steps taken (the next one is `step`, 0-based).
    pub step: usize,
    pub params: Vec<f32>,
    pub adam: AdamState,
}

impl TrainState {
    /// The parameters a run starts from: `init()` (the seeded initialisation) without a state
    /// to resume, else the state's, which must hold `total` of them.
    pub fn start_params(
        from: Option<&TrainState>,
        total: usize,
        init: impl FnOnce() -> Vec<f32>,
    ) -> Result<Vec<f32>, crate::NnError> {
        match from {
            None => Ok(init()),
            Some(s) if s.params.len() == total => Ok(s.params.clone()),
            Some(s) => Err(crate::NnError::InvalidConfig(format!(
                "the state to resume from has {} parameters, the model {total}",
                s.params.len()
            ))),
        }
    }
}

/// One named array of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U64(Vec<u64>),
}

impl Array {
    fn dtype(&self) -> &'static str {
        match self {
            Array::F32(_) => "f32",
            Array::F64(_) => "f64",
            Array::U64(_) => "u64",
        }
    }

    fn len(&self) -> usize {
        match self {
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::U64(v) => v.len(),
        }
    }
}

/// A checkpoint: what it belongs to (`tag`), the progress step it was taken at, and named
/// arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub tag: String,
    pub step: u64,
    arrays: BTreeMap<String, Array>,
}

/// What [`Checkpoint::read`] found.
#[derive(Debug)]
pub enum Found {
    /// No checkpoint file.
    Nothing,
    /// One that belongs to the tag asked for, whole and of this format.
    Usable(Checkpoint),
    /// A file that must not be resumed from, and why (truncated, another format, another tag).
    Unusable(String),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    tag: String,
    step: u64,
    /// name, dtype, length
    arrays: Vec<(String, String, u64)>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Checkpoint {
    pub fn new(tag: impl Into<String>, step: u64) -> Checkpoint {
        Checkpoint {
            tag: tag.into(),
            step,
            arrays: BTreeMap::new(),
        }
    }

    pub fn put(&mut self, name: &str, array: Array) {
        self.arrays.insert(name.to_owned(), array);
    }

    fn get(&self, name: &str) -> Result<&Array, String> {
        self.arrays
            .get(name)
            .ok_or_else(|| format!("it has no array `{name}`"))
    }

    pub fn f32s(&self, name: &str) -> Result<&[f32], String> {
        match self.get(name)? {
            Array::F32(v) => Ok(v),
            a => Err(format!("its array `{name}` is {}, not f32", a.dtype())),
        }
    }

    pub fn f64s(&self, name: &str) -> Result<&[f64], String> {
        match self.get(name)? {
            Array::F64(v) => Ok(v),
            a => Err(format!("its array `{name}` is {}, not f64", a.dtype())),
        }
    }

    pub fn u64s(&self, name: &str) -> Result<&[u64], String> {
        match self.get(name)? {
            Array::U64(v) => Ok(v),
            a => Err(format!("its array `{name}` is {}, not u64", a.dtype())),
        }
    }

    /// Stores a model's training state (under `prefix`, so one file can hold several).
    pub fn put_state(&mut self, prefix: &str, s: &TrainState) {
        self.put(
            &format!("{prefix}step"),
            Array::U64(vec![s.step as u64, s.adam.t]),
        );
        self.put(&format!("{prefix}params"), Array::F32(s.params.clone()));
        self.put(&format!("{prefix}adam.m"), Array::F32(s.adam.m.clone()));
        self.put(&format!("{prefix}adam.v"), Array::F32(s.adam.v.clone()));
    }

    /// The training state [`Checkpoint::put_state`] stored, checked to hold `n` parameters.
    pub fn state(&self, prefix: &str, n: usize) -> Result<TrainState, String> {
        let [step, t] = self.u64s(&format!("{prefix}step"))? else {
            return Err("its step record is malformed".into());
        };
        let params = self.f32s(&format!("{prefix}params"))?.to_vec();
        let m = self.f32s(&format!("{prefix}adam.m"))?.to_vec();
        let v = self.f32s(&format!("{prefix}adam.v"))?.to_vec();
        if params.len() != n || m.len() != n || v.len() != n {
            return Err(format!(
                "it holds {} parameters, the model has {n}",
                params.len()
            ));
        }
        Ok(TrainState {
            step: *step as usize,
            params,
            adam: AdamState { t: *t, m, v },
        })
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let header = Header {
            tag: self.tag.clone(),
            step: self.step,
            arrays: self
                .arrays
                .iter()
                .map(|(k, a)| (k.clone(), a.dtype().to_owned(), a.len() as u64))
                .collect(),
        };
        let json = serde_json::to_vec(&header).expect("strings and integers serialise");
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&CHECKPOINT_FORMAT.to_le_bytes());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        for a in self.arrays.values() {
            match a {
                Array::F32(v) => v.iter().for_each(|x| out.extend(x.to_bits().to_le_bytes())),
                Array::F64(v) => v.iter().for_each(|x| out.extend(x.to_bits().to_le_bytes())),
                Array::U64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            }
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses [`Checkpoint::encode`]'s bytes; `Err` says why they are not a usable checkpoint.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let body_len = bytes
            .len()
            .checked_sub(8)
            .ok_or("it is truncated (shorter than its checksum)")?;
        let (body, sum) = bytes.split_at(body_len);
        if body.len() < MAGIC.len() + 12 || &body[..MAGIC.len()] != MAGIC {
            return Err("it is not an ablate checkpoint".into());
        }
        let format = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if format != CHECKPOINT_FORMAT {
            return Err(format!(
                "it has format version {format}, this build reads {CHECKPOINT_FORMAT}"
            ));
        }
        if fnv1a(body).to_le_bytes() != sum {
            return Err("its checksum does not match (truncated or damaged)".into());
        }
        let hlen = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes")) as usize;
        let json = body
            .get(20..20usize.saturating_add(hlen))
            .ok_or("its header is truncated")?;
        let header: Header =
            serde_json::from_slice(json).map_err(|e| format!("its header is malformed: {e}"))?;
        let mut rest = &body[20 + hlen..];
        let mut arrays = BTreeMap::new();
        for (name, dtype, len) in header.arrays {
            let width = match dtype.as_str() {
                "f32" => 4,
                "f64" | "u64" => 8,
                other => return Err(format!("its array `{name}` has unknown type `{other}`")),
            };
            let size = (len as usize)
                .checked_mul(width)
                .filter(|&s| s <= rest.len())
                .ok_or_else(|| format!("its array `{name}` is truncated"))?;
            let (data, tail) = rest.split_at(size);
            rest = tail;
            let array = match width {
                4 => Array::F32(
                    data.chunks_exact(4)
                        .map(|c| f32::from_bits(u32::from_le_bytes(c.try_into().expect("4"))))
                        .collect(),
                ),
                _ => {
                    let words = data
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8")));
                    if dtype == "f64" {
                        Array::F64(words.map(f64::from_bits).collect())
                    } else {
                        Array::U64(words.collect())
                    }
                }
            };
            arrays.insert(name, array);
        }
        if !rest.is_empty() {
            return Err("it has trailing bytes".into());
        }
        Ok(Checkpoint {
            tag: header.tag,
            step: header.step,
            arrays,
        })
    }

    /// Writes the checkpoint to `path` through a temporary file in the same directory, synced
    /// and renamed over it: a cancelled or killed writer leaves the previous file (or none).
    pub fn write(&self, path: &Path) -> Result<(), NnError> {
        let tmp = temp_path(path);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&self.encode())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(NnError::io(path))
    }

    /// Reads the checkpoint at `path` if it is one of `tag` (the caller's identity of what was
    /// trained: a checkpoint of anything else is [`Found::Unusable`]).
    pub fn read(path: &Path, tag: &str) -> Found {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Nothing,
            Err(e) => return Found::Unusable(format!("it cannot be read: {e}")),
        };
        match Checkpoint::decode(&bytes) {
            Ok(c) if c.tag == tag => Found::Usable(c),
            Ok(c) => Found::Unusable(format!(
                "it is of `{}`, not of `{tag}`",
                c.tag.chars().take(80).collect::<String>()
            )),
            Err(why) => Found::Unusable(why),
        }
    }
}

/// `path`'s temporary sibling for this process.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::new("train.flow abc", 3);
        c.put_state(
            "",
            &TrainState {
                step: 12,
                params: vec![1.5, -0.0, f32::MIN_POSITIVE / 2.0],
                adam: AdamState {
                    t: 12,
                    m: vec![0.1, 0.2, 0.3],
                    v: vec![1e-30, 2.0, 3.0],
                },
            },
        );
        c.put("history.loss", Array::F64(vec![0.1 + 0.2, f64::MAX]));
        c
    }

    #[test]
    fn a_checkpoint_round_trips_bit_for_bit() {
        let c = sample();
        let back = Checkpoint::decode(&c.encode()).unwrap();
        assert_eq!(back.encode(), c.encode());
        let s = back.state("", 3).unwrap();
        assert_eq!(s.params[2].to_bits(), (f32::MIN_POSITIVE / 2.0).to_bits());
        assert_eq!(s.params[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(back.f64s("history.loss").unwrap()[0], 0.1 + 0.2);
        assert!(back.state("", 4).unwrap_err().contains("3 parameters"));
    }

    #[test]
    fn a_truncated_or_foreign_checkpoint_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck");
        assert!(matches!(Checkpoint::read(&path, "x"), Found::Nothing));
        let c = sample();
        c.write(&path).unwrap();
        assert!(matches!(Checkpoint::read(&path, &c.tag), Found::Usable(_)));
        // no temporary file is left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        match Checkpoint::read(&path, "train.flow other") {
            Found::Unusable(why) => assert!(why.contains("not of"), "{why}"),
            f => panic!("{f:?}"),
        }
        let bytes = c.encode();
        for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(
                matches!(Checkpoint::read(&path, &c.tag), Found::Unusable(_)),
                "cut at {cut}"
            );
        }
        let mut other = bytes.clone();
        other[8] = 9; // format version 9
        let n = other.len() - 8;
        let sum = fnv1a(&other[..n]);
        other[n..].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(&path, &other).unwrap();
        match Checkpoint::read(&path, &c.tag) {
            Found::Unusable(why) => assert!(why.contains("format version 9"), "{why}"),
            f => panic!("{f:?}"),
        }
    }
}
