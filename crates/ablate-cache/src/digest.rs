use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::CacheError;

/// A SHA-256 digest, shown and stored as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Streams a file through SHA-256.
    pub fn of_file(path: &Path) -> Result<Self, CacheError> {
        let io = |source| CacheError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Self(hasher.finalize().into()))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn to_hex(&self) -> String {
        let mut hex = [0u8; 64];
        self.write_hex(&mut hex);
        String::from_utf8(hex.to_vec()).expect("hex is ASCII")
    }

    /// The 64 lowercase hex characters of [`Digest::to_hex`], into a buffer (no allocation).
    pub fn write_hex(&self, out: &mut [u8; 64]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[(b >> 4) as usize];
            pair[1] = HEX[(b & 15) as usize];
        }
    }

    /// The first 8 hex characters: what progress lines and `ablate plan` show.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_owned()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        /// Each byte's value as a lowercase hex digit; 16 for any other byte.
        const NIBBLE: [u8; 256] = {
            let mut table = [16u8; 256];
            let mut c = 0;
            while c < 10 {
                table[b'0' as usize + c] = c as u8;
                c += 1;
            }
            let mut c = 0;
            while c < 6 {
                table[b'a' as usize + c] = 10 + c as u8;
                c += 1;
            }
            table
        };
        if s.len() != 64 {
            return Err(format!("expected 64 hex characters, found {}", s.len()));
        }
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            let (h, l) = (NIBBLE[pair[0] as usize], NIBBLE[pair[1] as usize]);
            bad |= h | l;
            *byte = h << 4 | (l & 15);
        }
        // Only a byte that is no hex digit has the bit 16.
        if bad & 16 != 0 {
            return Err(format!("`{s}` is not lowercase hex"));
        }
        Ok(Self(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut hex = [0u8; 64];
        self.write_hex(&mut hex);
        s.serialize_str(std::str::from_utf8(&hex).expect("hex is ASCII"))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_hex_round_trip() {
        // SHA-256("abc") from FIPS 180-2.
        let d = Digest::of_bytes(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert_eq!(d.short(), "ba7816bf");
        assert!("BA78".parse::<Digest>().is_err());
        assert!("zz".repeat(32).parse::<Digest>().is_err());
        assert!(d.to_hex().to_uppercase().parse::<Digest>().is_err());
        for bad in [b'g', b'/', b':', b'`', b'G', b'A', 0, 0xff] {
            let mut hex = d.to_hex().into_bytes();
            hex[63] = bad;
            let hex = String::from_utf8_lossy(&hex).into_owned();
            assert!(hex.parse::<Digest>().is_err(), "{hex:?}");
        }
        for i in 0..=255u8 {
            let d = Digest::from_bytes([i; 32]);
            assert_eq!(d.to_hex().parse::<Digest>(), Ok(d));
        }
    }

    #[test]
    fn file_digest_equals_bytes_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(Digest::of_file(&p).unwrap(), Digest::of_bytes(&data));
    }
}
