//! The byte-level vocabulary: 256 byte tokens, special tokens, the three UL2 mode tokens, and
//! sentinels (T5's `<extra_id_k>`), in that order.

/// Token ids. Bytes are `0..256`.
pub const PAD: u32 = 256;
/// Begins every decoder-only sequence without a mode token, and every encdec decoder input.
pub const BOS: u32 = 257;
/// Ends a target (written after the last span of a span-corruption target, and after a
/// one-shot answer the model should stop at).
pub const EOS: u32 = 258;
/// `[NLU]`: the mode token of the R (regular span corruption) denoisers.
pub const NLU: u32 = 259;
/// `[NLG]`: the mode token of the X (extreme) denoisers.
pub const NLG: u32 = 260;
/// `[S2S]`: the mode token of the S (sequential, prefix-LM) denoisers.
pub const S2S: u32 = 261;
/// The first sentinel; sentinel k is `SENTINEL0 + k`.
pub const SENTINEL0: u32 = 262;
/// How many sentinels there are (as in T5); a corruption never makes more spans than this.
pub const SENTINELS: u32 = 100;
/// The vocabulary size.
pub const VOCAB: usize = (SENTINEL0 + SENTINELS) as usize;

/// The UL2 paradigm a denoiser belongs to, and so its mode token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// Regular span corruption: `[NLU]`.
    R,
    /// Extreme span corruption: `[NLG]`.
    X,
    /// Sequential (prefix LM / causal LM): `[S2S]`.
    S,
}

impl Mode {
    pub fn token(self) -> u32 {
        match self {
            Mode::R => NLU,
            Mode::X => NLG,
            Mode::S => S2S,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::R => "R",
            Mode::X => "X",
            Mode::S => "S",
        }
    }
}

/// The token of sentinel `k`.
pub fn sentinel(k: usize) -> u32 {
    assert!(k < SENTINELS as usize, "sentinel {k} out of range");
    SENTINEL0 + k as u32
}

pub fn is_sentinel(t: u32) -> bool {
    (SENTINEL0..SENTINEL0 + SENTINELS).contains(&t)
}

/// The bytes of UTF-8 text as tokens.
pub fn encode(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

/// Tokens back to text: bytes as they are (invalid UTF-8 replaced), special tokens written as
/// `<pad>`, `<bos>`, `<eos>`, `[NLU]`, `[NLG]`, `[S2S]`, `<extra_id_k>`.
pub fn decode(tokens: &[u32]) -> String {
    let mut out = String::new();
    let mut bytes = Vec::new();
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        out.push_str(&String::from_utf8_lossy(bytes));
        bytes.clear();
    };
    for &t in tokens {
        if t < 256 {
            bytes.push(t as u8);
            continue;
        }
        flush(&mut bytes, &mut out);
        match t {
            PAD => out.push_str("<pad>"),
            BOS => out.push_str("<bos>"),
            EOS => out.push_str("<eos>"),
            NLU => out.push_str("[NLU]"),
            NLG => out.push_str("[NLG]"),
            S2S => out.push_str("[S2S]"),
            t if is_sentinel(t) => out.push_str(&format!("<extra_id_{}>", t - SENTINEL0)),
            t => out.push_str(&format!("<unk_{t}>")),
        }
    }
    flush(&mut bytes, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_specials_are_named() {
        let s = "héllo, wörld\n";
        assert_eq!(decode(&encode(s)), s);
        assert_eq!(
            decode(&[b'a' as u32, sentinel(3), NLU, EOS]),
            "a<extra_id_3>[NLU]<eos>"
        );
        assert_eq!(VOCAB, 362);
    }
}
