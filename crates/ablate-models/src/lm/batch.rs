//! What a model reads: token ids, already laid out for its architecture.

/// One batch of `rows` examples, laid out for one [`super::Arch`].
///
/// Decoder-only: `tokens` is the whole sequence (inputs then targets, PAD after its end);
/// position t predicts `targets[t]` (= `tokens[t + 1]` where that exists), counted in the loss
/// with weight `weights[t]` (1 on target positions, 0 on inputs and padding); the first
/// `prefix[r]` positions of row r attend bidirectionally (0: fully causal). `enc_*` are empty.
///
/// Encoder-decoder: `enc_tokens` (rows × `enc_len`) holds the inputs, of which the first
/// `enc_lens[r]` are valid (the rest PAD, never attended to); `tokens` is the decoder input
/// (BOS then the targets shifted right), `targets` what each position predicts, `weights` 1 on
/// real targets; `prefix` is all 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub rows: usize,
    /// Decoder length of every row.
    pub len: usize,
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
    pub prefix: Vec<usize>,
    /// Encoder length of every row (0 for decoder-only).
    pub enc_len: usize,
    pub enc_tokens: Vec<u32>,
    pub enc_lens: Vec<usize>,
}

impl Batch {
    /// Checks the shapes against each other and the token ids against `vocab`.
    pub fn check(&self, vocab: usize) -> Result<(), String> {
        let n = self.rows * self.len;
        if self.tokens.len() != n || self.targets.len() != n || self.weights.len() != n {
            return Err(format!(
                "batch of {} × {}: tokens/targets/weights have {}/{}/{} entries",
                self.rows,
                self.len,
                self.tokens.len(),
                self.targets.len(),
                self.weights.len()
            ));
        }
        if self.prefix.len() != self.rows {
            return Err(format!(
                "{} prefixes for {} rows",
                self.prefix.len(),
                self.rows
            ));
        }
        if self.enc_tokens.len() != self.rows * self.enc_len
            || (self.enc_len > 0 && self.enc_lens.len() != self.rows)
        {
            return Err("encoder tokens do not match rows × enc_len".into());
        }
        if let Some(t) = self
            .tokens
            .iter()
            .chain(&self.targets)
            .chain(&self.enc_tokens)
            .find(|&&t| t as usize >= vocab)
        {
            return Err(format!("token id {t} is outside the vocabulary of {vocab}"));
        }
        Ok(())
    }
}
