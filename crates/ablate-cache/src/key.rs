use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Digest;

/// Version of the key scheme: bump it and every key changes (a new bucket of the cache).
pub const HASH_SCHEME: u32 = 1;

/// The content address of one stage instance.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceKey(Digest);

impl InstanceKey {
    pub fn digest(&self) -> &Digest {
        &self.0
    }
    pub fn short(&self) -> String {
        self.0.short()
    }
    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }
    /// The first byte: which `v1/<bucket>/` directory holds the entry.
    pub(crate) fn bucket(&self) -> u8 {
        self.0.as_bytes()[0]
    }
    pub(crate) fn from_digest(digest: Digest) -> Self {
        InstanceKey(digest)
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceKey({})", self.short())
    }
}

impl std::str::FromStr for InstanceKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(InstanceKey)
    }
}

/// One input of an instance, as it enters the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// The upstream stage's name, only for ops that tell inputs apart by name (`cmd`'s
    /// `{in.STAGE}`); other ops see inputs by content, so renaming a stage keeps their keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub key: InstanceKey,
}

/// A file the instance depends on (`cmd`'s `deps`), by its path as written and its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepDigest {
    pub path: String,
    pub digest: Digest,
}

/// Everything a key is computed from, and nothing else: not the device, thread count, paths
/// of the cache, or the pipeline's or stage's name. Serialised canonically (sorted keys, one
/// number format) so the same struct gives the same key on every machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyInput {
    pub scheme: u32,
    pub op: String,
    pub op_version: u32,
    pub params: BTreeMap<String, Value>,
    pub inputs: Vec<InputRef>,
    pub deps: Vec<DepDigest>,
}

impl KeyInput {
    pub fn key(&self) -> InstanceKey {
        let mut out = Vec::with_capacity(256);
        self.write_canonical(&mut out);
        InstanceKey(Digest::of_bytes(&out))
    }

    /// The canonical JSON of this struct. Equal to `canonical_json(&to_value(self))`, which a
    /// test checks.
    #[cfg(test)]
    fn canonical(&self) -> String {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Writes the canonical JSON of this struct directly (no intermediate `Value` tree and no
    /// string per field: a plan of 10k instances hashes 10k of these); fields are written in
    /// sorted order by hand.
    fn write_canonical(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"deps\":[");
        for (i, d) in self.deps.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"digest\":\"");
            write_hex(&d.digest, out);
            out.extend_from_slice(b"\",\"path\":");
            write_str(&d.path, out);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"inputs\":[");
        for (i, r) in self.inputs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"key\":\"");
            write_hex(r.key.digest(), out);
            out.push(b'"');
            if let Some(name) = &r.name {
                out.extend_from_slice(b",\"name\":");
                write_str(name, out);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"op\":");
        write_str(&self.op, out);
        out.extend_from_slice(b",\"op_version\":");
        serde_json::to_writer(&mut *out, &self.op_version).expect("numbers serialise");
        out.extend_from_slice(b",\"params\":{");
        // A BTreeMap<String, _> iterates in byte order of its keys: already canonical.
        for (i, (k, v)) in self.params.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(k, out);
            out.push(b':');
            write_value(v, out);
        }
        out.extend_from_slice(b"},\"scheme\":");
        serde_json::to_writer(&mut *out, &self.scheme).expect("numbers serialise");
        out.push(b'}');
    }
}

fn write_hex(digest: &Digest, out: &mut Vec<u8>) {
    let mut hex = [0u8; 64];
    digest.write_hex(&mut hex);
    out.extend_from_slice(&hex);
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(out, s).expect("strings serialise");
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, numbers in
/// serde_json's shortest round-trip form (ryu for floats, `-0.0` written as `0.0`). Written
/// here rather than relying on `serde_json::Map`'s order, which a feature flag elsewhere in the
/// dependency graph (`preserve_order`) would silently change.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out);
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f == 0.0 => out.extend_from_slice(b"0.0"),
            // serde_json's own number form (itoa, ryu), without `fmt`'s machinery.
            _ => serde_json::to_writer(out, n).expect("numbers serialise"),
        },
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(params: Value) -> KeyInput {
        KeyInput {
            scheme: HASH_SCHEME,
            op: "train.flow".into(),
            op_version: 1,
            params: serde_json::from_value(params).unwrap(),
            inputs: vec![],
            deps: vec![],
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [1.5, "x", null], "y": true}, "-0": -0.0});
        assert_eq!(
            canonical_json(&v),
            r#"{"-0":0.0,"a":{"y":true,"z":[1.5,"x",null]},"b":1}"#
        );
    }

    #[test]
    fn key_is_pinned() {
        // Pinned so an accidental change of the scheme (field names, number format, ordering)
        // fails here instead of silently invalidating every user's cache. The digest was
        // computed independently: Python's `json.dumps(d, sort_keys=True, separators=(",", ":"))`
        // of the same struct gives this exact text, and `hashlib.sha256` of it this key.
        let ki = input(json!({"weights": "shared", "steps": 4, "lr": 0.01}));
        assert_eq!(
            canonical_json(&serde_json::to_value(&ki).unwrap()),
            r#"{"deps":[],"inputs":[],"op":"train.flow","op_version":1,"params":{"lr":0.01,"steps":4,"weights":"shared"},"scheme":1}"#
        );
        assert_eq!(
            ki.key().to_hex(),
            "7cd20562b45a974928899ed771cc4d6cfd37e976ba3aff04aacf4485a76da344"
        );
    }

    #[test]
    fn direct_canonical_form_equals_the_generic_one() {
        let mut ki = input(json!({"z": [1, {"b": 2, "a": "\"q\""}], "a": -0.0, "m": null}));
        ki.inputs = vec![
            InputRef {
                name: Some("st\u{e9}ge".into()),
                key: ki.key(),
            },
            InputRef {
                name: None,
                key: ki.key(),
            },
        ];
        ki.deps = vec![DepDigest {
            path: "a b/\\c.py".into(),
            digest: Digest::of_bytes(b"x"),
        }];
        assert_eq!(
            ki.canonical(),
            canonical_json(&serde_json::to_value(&ki).unwrap())
        );
    }

    #[test]
    fn any_change_of_a_component_changes_the_key() {
        let base = input(json!({"steps": 4, "lr": 0.01}));
        let k = base.key();
        let mut v = base.clone();
        v.params.insert("lr".into(), json!(0.02));
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.op_version = 2;
        assert_ne!(v.key(), k);
        let mut v = base.clone();
        v.inputs.push(InputRef { name: None, key: k });
        assert_ne!(v.key(), k);
        let mut named = v.clone();
        named.inputs[0].name = Some("data".into());
        assert_ne!(named.key(), v.key());
        let mut v = base.clone();
        v.deps.push(DepDigest {
            path: "s.py".into(),
            digest: Digest::of_bytes(b"x"),
        });
        assert_ne!(v.key(), k);
        // An int and a float of the same value are different params by design: the spec
        // normalises values by their declared type before they get here.
        let mut v = base.clone();
        v.params.insert("steps".into(), json!(4.0));
        assert_ne!(v.key(), k);
    }

    #[test]
    fn key_ignores_insertion_order() {
        let mut a = serde_json::Map::new();
        a.insert("x".into(), json!(1));
        a.insert("y".into(), json!(2));
        let mut b = serde_json::Map::new();
        b.insert("y".into(), json!(2));
        b.insert("x".into(), json!(1));
        let ka = input(json!({"nested": Value::Object(a)})).key();
        let kb = input(json!({"nested": Value::Object(b)})).key();
        assert_eq!(ka, kb);
    }
}
