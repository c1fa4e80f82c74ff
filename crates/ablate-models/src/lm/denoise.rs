//! The UL2 denoisers (Tay et al. 2022): span corruption built as T5 builds it (R and X), the
//! prefix LM and the causal LM (S); mixtures of them; packing examples into a [`Batch`] for
//! either architecture; and the [`Sampler`] the trainer draws its batches from.

use super::batch::Batch;
use super::config::Arch;
use super::layout::STREAM_LM_DATA;
use super::vocab::{self, BOS, EOS, Mode, PAD};
use crate::NnError;
use crate::rng::SplitMix64;

/// How many noise tokens and noise spans span corruption makes of `length` tokens, as T5's
/// `random_spans_noise_mask` computes them: in f32 (TF's `to_float`), rounding half to even
/// (`tf.round`), noise tokens clamped to `[1, length - 1]`, spans to at least 1; here also to at
/// most [`vocab::SENTINELS`] and at most the non-noise tokens (each noise span needs a
/// non-noise span before it). `length` is taken as at least 2, like T5.
fn span_counts(length: usize, density: f64, mu: f64) -> (usize, usize) {
    let length = length.max(2);
    let noise = ((length as f32 * density as f32).round_ties_even() as usize).clamp(1, length - 1);
    let spans = ((noise as f32 / mu as f32).round_ties_even() as usize)
        .max(1)
        .min(vocab::SENTINELS as usize)
        .min(length - noise)
        .min(noise);
    (noise, spans)
}

/// T5's `_random_segmentation`: `items` split into `segments` positive lengths, every such
/// partition equally likely (shuffle `segments - 1` segment starts among the `items - 1`
/// positions after the first).
fn random_segmentation(items: usize, segments: usize, rng: &mut SplitMix64) -> Vec<usize> {
    debug_assert!(1 <= segments && segments <= items);
    let mut first_in_segment = vec![false; items - 1];
    first_in_segment[..segments - 1].fill(true);
    rng.shuffle(&mut first_in_segment);
    let mut lens = vec![0; segments];
    lens[0] = 1;
    let mut seg = 0;
    for starts in first_in_segment {
        seg += usize::from(starts);
        lens[seg] += 1;
    }
    lens
}

/// T5's `random_spans_noise_mask` (t5/data/preprocessors.py): `true` marks noise. The counts
/// are those of [`span_counts`]; the noise and then the non-noise tokens are each split into
/// that many spans by [`random_segmentation`], and the spans alternate non-noise, noise, …,
/// beginning with non-noise (so, as in T5, the mask always ends in noise). A `length` below 2
/// is padded to 2 and the mask truncated back.
pub(crate) fn random_spans_noise_mask(
    length: usize,
    noise_density: f64,
    mean_noise_span_length: f64,
    rng: &mut SplitMix64,
) -> Vec<bool> {
    let padded = length.max(2);
    let (noise, spans) = span_counts(padded, noise_density, mean_noise_span_length);
    let noise_lens = random_segmentation(noise, spans, rng);
    let nonnoise_lens = random_segmentation(padded - noise, spans, rng);
    let mut mask = Vec::with_capacity(padded);
    for (keep, drop) in nonnoise_lens.into_iter().zip(noise_lens) {
        mask.extend(std::iter::repeat_n(false, keep));
        mask.extend(std::iter::repeat_n(true, drop));
    }
    mask.truncate(length);
    mask
}

/// One denoising objective.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Denoiser {
    /// Span corruption with mean span length `mu` and corruption rate `r` (R or X).
    Span { mu: f64, r: f64, mode: Mode },
    /// Prefix LM: the model continues a prefix; the suffix is on average `mean_target` of the
    /// window (the draw is documented on `corrupt`).
    Prefix { mean_target: f64 },
    /// Causal LM: the whole window is the target.
    Causal,
}

impl Denoiser {
    /// The UL2 paradigm (Prefix and Causal are S).
    pub fn mode(&self) -> Mode {
        match self {
            Denoiser::Span { mode, .. } => *mode,
            Denoiser::Prefix { .. } | Denoiser::Causal => Mode::S,
        }
    }

    /// `R(μ=3, r=0.15)`, `X(μ=64, r=0.5)`, `S(prefix, target 25%)`, `CLM`.
    pub fn describe(&self) -> String {
        match self {
            Denoiser::Span { mu, r, mode } => {
                format!("{}(μ={}, r={})", mode.name(), num(*mu), num(*r))
            }
            Denoiser::Prefix { mean_target } => {
                format!("S(prefix, target {}%)", num(mean_target * 100.0))
            }
            Denoiser::Causal => "CLM".into(),
        }
    }

    fn validate(&self) -> Result<(), NnError> {
        let bad = |msg: String| Err(NnError::InvalidConfig(msg));
        match *self {
            Denoiser::Span { mu, r, .. } => {
                if !(mu.is_finite() && mu >= 1.0) {
                    return bad(format!(
                        "a span denoiser's `mu` must be at least 1, not `{mu}`"
                    ));
                }
                if !(r > 0.0 && r < 1.0) {
                    return bad(format!(
                        "a span denoiser's `r` must be in (0, 1), not `{r}`"
                    ));
                }
            }
            Denoiser::Prefix { mean_target } => {
                if !(mean_target > 0.0 && mean_target < 1.0) {
                    return bad(format!(
                        "a prefix denoiser's `mean_target` must be in (0, 1), not `{mean_target}`"
                    ));
                }
            }
            Denoiser::Causal => {}
        }
        Ok(())
    }
}

/// A number as short as it reads: `3`, `0.15`, `1.5` (at most three decimals).
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What the model reads and what it must produce. `inputs` always begins with a lead token
/// (the denoiser's mode token when mode tokens are on, else [`BOS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

/// The longest raw window `d` may corrupt so that the example fits a `seq_len` model:
/// decoder-only, `inputs` and `targets` together take at most `seq_len` tokens (for spans,
/// `1 + L + 2·spans + 1`); encoder-decoder, each takes at most `seq_len`. An error when that
/// window would be shorter than 2 tokens.
pub fn raw_len(d: &Denoiser, arch: Arch, seq_len: usize) -> Result<usize, NnError> {
    let len = match (*d, arch) {
        // An encdec window may be longer than `seq_len` (its spans leave the encoder), but its
        // two limits add up to L + 2·spans + 2 ≤ 2·seq_len.
        (Denoiser::Span { mu, r, .. }, _) => (2..=2 * seq_len + 2)
            .rev()
            .find(|&l| {
                let (noise, spans) = span_counts(l, r, mu);
                match arch {
                    Arch::Decoder => l + 2 * spans + 2 <= seq_len,
                    Arch::EncDec => 1 + l - noise + spans <= seq_len && spans + noise < seq_len,
                }
            })
            .unwrap_or(0),
        // Prefix: the suffix has at least one token, so `lead ++ prefix` has at most `L`.
        (Denoiser::Prefix { .. } | Denoiser::Causal, Arch::Decoder) => seq_len.saturating_sub(1),
        (Denoiser::Prefix { .. } | Denoiser::Causal, Arch::EncDec) => seq_len,
    };
    if len < 2 {
        return Err(NnError::InvalidConfig(format!(
            "`seq_len` {seq_len} is too short for {} on the {} architecture",
            d.describe(),
            arch.name()
        )));
    }
    Ok(len)
}

/// Applies `d` to the raw window `raw`, with `lead` as the first input token:
///
/// - span corruption: `inputs` = lead ++ `raw` with noise span k replaced by sentinel k;
///   `targets` = sentinel k ++ span k for each span, then [`EOS`];
/// - prefix LM: `inputs` = lead ++ prefix, `targets` = suffix, whose length is uniform in
///   `1..=hi` with `hi = round(2·mean_target·L)` clamped to `[1, L - 1]`: its mean is
///   `(hi + 1) / 2 ≈ mean_target·L + ½` (less where the clamp bites, `mean_target` > ½). A
///   window of fewer than 2 tokens has no split and becomes all target;
/// - causal LM: `inputs` = [lead], `targets` = `raw`.
pub(crate) fn corrupt(d: &Denoiser, raw: &[u32], lead: u32, rng: &mut SplitMix64) -> Example {
    let mut inputs = vec![lead];
    match *d {
        Denoiser::Span { mu, r, .. } => {
            let mask = random_spans_noise_mask(raw.len(), r, mu, rng);
            let mut targets = Vec::new();
            let mut k = 0;
            for (i, (&t, &noise)) in raw.iter().zip(&mask).enumerate() {
                if !noise {
                    inputs.push(t);
                    continue;
                }
                if i == 0 || !mask[i - 1] {
                    inputs.push(vocab::sentinel(k));
                    targets.push(vocab::sentinel(k));
                    k += 1;
                }
                targets.push(t);
            }
            targets.push(EOS);
            Example { inputs, targets }
        }
        Denoiser::Prefix { mean_target } if raw.len() >= 2 => {
            let l = raw.len();
            let hi = ((2.0 * mean_target * l as f64).round() as usize).clamp(1, l - 1);
            let split = l - (1 + rng.below(hi));
            inputs.extend_from_slice(&raw[..split]);
            Example {
                inputs,
                targets: raw[split..].to_vec(),
            }
        }
        Denoiser::Prefix { .. } | Denoiser::Causal => Example {
            inputs,
            targets: raw.to_vec(),
        },
    }
}

/// Denoisers with normalised weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    entries: Vec<(Denoiser, f64)>,
}

impl Mixture {
    /// A mixture of the given denoisers; the weights (positive, finite) are normalised.
    pub fn custom(entries: Vec<(Denoiser, f64)>) -> Result<Mixture, NnError> {
        if entries.is_empty() {
            return Err(NnError::InvalidConfig("a mixture needs a denoiser".into()));
        }
        for (d, w) in &entries {
            d.validate()?;
            if !(w.is_finite() && *w > 0.0) {
                return Err(NnError::InvalidConfig(format!(
                    "the weight of {} must be positive and finite, not `{w}`",
                    d.describe()
                )));
            }
        }
        let total: f64 = entries.iter().map(|(_, w)| w).sum();
        Ok(Mixture {
            entries: entries.into_iter().map(|(d, w)| (d, w / total)).collect(),
        })
    }

    pub fn entries(&self) -> &[(Denoiser, f64)] {
        &self.entries
    }

    /// Each denoiser as [`Denoiser::describe`] writes it, with its weight.
    pub fn describe(&self) -> Vec<(String, f64)> {
        self.entries
            .iter()
            .map(|(d, w)| (d.describe(), *w))
            .collect()
    }

    /// The index of an entry drawn by weight.
    pub(crate) fn sample(&self, rng: &mut SplitMix64) -> usize {
        let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let mut acc = 0.0;
        for (i, (_, w)) in self.entries.iter().enumerate() {
            acc += w;
            if u < acc {
                return i;
            }
        }
        self.entries.len() - 1
    }
}

/// Lays `examples` out as one [`Batch`] for `arch` (see [`Batch`] for the contract), truncating
/// what does not fit in `seq_len`. Rows (and encoder rows) are as long as the longest example
/// needs, at most `seq_len`: an encoder-decoder's short targets, or a causal encdec's one-token
/// input, are not padded to `seq_len`, which saves their compute and changes no result (padding
/// is masked, and encoder positions are counted from each input's end).
///
/// - decoder-only: `tokens` = inputs ++ targets, `targets[t]` = `tokens[t + 1]` (PAD at the
///   last position), weight 1 where the next token is a target (positions
///   `len(inputs) - 1 ..= len(inputs) + len(targets) - 2`), `prefix` = `len(inputs)` when
///   `prefix_lm`, else 0;
/// - encoder-decoder: `enc_tokens` = inputs, `tokens` = BOS ++ targets without its last,
///   `targets` = targets, weight 1 on each real target.
pub fn pack(examples: &[Example], arch: Arch, seq_len: usize, prefix_lm: bool) -> Batch {
    let rows = examples.len();
    let longest = |f: &dyn Fn(&Example) -> usize| {
        examples
            .iter()
            .map(f)
            .max()
            .unwrap_or(1)
            .clamp(1, seq_len.max(1))
    };
    let (len, enc_len) = match arch {
        Arch::Decoder => (longest(&|e| e.inputs.len() + e.targets.len()), 0),
        Arch::EncDec => (longest(&|e| e.targets.len()), longest(&|e| e.inputs.len())),
    };
    let n = rows * len;
    let mut b = Batch {
        rows,
        len,
        tokens: vec![PAD; n],
        targets: vec![PAD; n],
        weights: vec![0.0; n],
        prefix: vec![0; rows],
        ..Batch::default()
    };
    if arch == Arch::EncDec {
        b.enc_len = enc_len;
        b.enc_tokens = vec![PAD; rows * enc_len];
        b.enc_lens = vec![0; rows];
    }
    for (r, ex) in examples.iter().enumerate() {
        let row = r * len..(r + 1) * len;
        let (tokens, targets, weights) = (
            &mut b.tokens[row.clone()],
            &mut b.targets[row.clone()],
            &mut b.weights[row],
        );
        match arch {
            Arch::Decoder => {
                let seq: Vec<u32> = ex.inputs.iter().chain(&ex.targets).copied().collect();
                let used = seq.len().min(len);
                tokens[..used].copy_from_slice(&seq[..used]);
                targets[..len - 1].copy_from_slice(&tokens[1..]);
                // Position t is weighted iff tokens[t + 1] is a target token.
                let first = ex.inputs.len().saturating_sub(1);
                let end = (ex.inputs.len() + ex.targets.len()).saturating_sub(1);
                for w in weights.iter_mut().take(end.min(len - 1)).skip(first) {
                    *w = 1.0;
                }
                if prefix_lm {
                    b.prefix[r] = ex.inputs.len().min(len);
                }
            }
            Arch::EncDec => {
                let enc = ex.inputs.len().min(enc_len);
                b.enc_tokens[r * enc_len..][..enc].copy_from_slice(&ex.inputs[..enc]);
                b.enc_lens[r] = enc;
                let dec = ex.targets.len().min(len);
                if dec > 0 {
                    tokens[0] = BOS;
                    tokens[1..dec].copy_from_slice(&ex.targets[..dec - 1]);
                }
                targets[..dec].copy_from_slice(&ex.targets[..dec]);
                weights[..dec].fill(1.0);
            }
        }
    }
    b
}

/// Draws the trainer's batches: each row picks a denoiser of the mixture by weight, a uniformly
/// random window of that denoiser's [`raw_len`] from the token stream, and corrupts it with the
/// denoiser's mode token (or [`BOS`] without mode tokens) as lead.
#[derive(Clone, Debug)]
pub struct Sampler {
    stream: Vec<u32>,
    mixture: Mixture,
    raw_lens: Vec<usize>,
    leads: Vec<u32>,
    arch: Arch,
    seq_len: usize,
    prefix_lm: bool,
    rng: SplitMix64,
    counts: Vec<u64>,
}

impl Sampler {
    pub fn new(
        stream: Vec<u32>,
        mixture: Mixture,
        arch: Arch,
        seq_len: usize,
        mode_tokens: bool,
        prefix_lm: bool,
        seed: u64,
    ) -> Result<Sampler, NnError> {
        let raw_lens = mixture
            .entries()
            .iter()
            .map(|(d, _)| raw_len(d, arch, seq_len))
            .collect::<Result<Vec<_>, _>>()?;
        let longest = raw_lens.iter().copied().max().unwrap_or(0);
        if stream.len() < longest {
            return Err(NnError::InvalidData(format!(
                "the training stream has {} tokens, fewer than the longest window of {longest}",
                stream.len()
            )));
        }
        let leads = mixture
            .entries()
            .iter()
            .map(|(d, _)| if mode_tokens { d.mode().token() } else { BOS })
            .collect();
        Ok(Sampler {
            stream,
            counts: vec![0; mixture.entries().len()],
            mixture,
            raw_lens,
            leads,
            arch,
            seq_len,
            prefix_lm,
            rng: SplitMix64::new(seed, STREAM_LM_DATA),
        })
    }

    /// The next batch of `rows` examples.
    pub fn next_batch(&mut self, rows: usize) -> Batch {
        let examples: Vec<Example> = (0..rows)
            .map(|_| {
                let i = self.mixture.sample(&mut self.rng);
                self.counts[i] += 1;
                let len = self.raw_lens[i];
                let start = self.rng.below(self.stream.len() - len + 1);
                let raw = &self.stream[start..start + len];
                corrupt(
                    &self.mixture.entries()[i].0,
                    raw,
                    self.leads[i],
                    &mut self.rng,
                )
            })
            .collect();
        pack(&examples, self.arch, self.seq_len, self.prefix_lm)
    }

    /// Where the stream stands: its generator's state and the counts so far (a checkpoint's
    /// record, #24; [`Sampler::resume`] puts it back).
    pub fn position(&self) -> (u64, Vec<u64>) {
        (self.rng.state(), self.counts.clone())
    }

    /// Puts the stream where [`Sampler::position`] found it; `Err` when the counts are not of
    /// this mixture.
    pub fn resume(&mut self, rng: u64, counts: &[u64]) -> Result<(), String> {
        if counts.len() != self.counts.len() {
            return Err(format!(
                "it counts {} denoisers, the objective has {}",
                counts.len(),
                self.counts.len()
            ));
        }
        self.rng = SplitMix64::from_state(rng);
        self.counts.copy_from_slice(counts);
        Ok(())
    }

    /// How many rows each mixture entry has produced so far.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn mixture(&self) -> &Mixture {
        &self.mixture
    }

    /// Each entry's raw window length.
    pub fn raw_lens(&self) -> &[usize] {
        &self.raw_lens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::objective::{MixtureOptions, Objective};
    use crate::lm::vocab::{NLG, NLU, S2S, sentinel};

    /// Runs of equal values: `(value, length)`.
    fn runs(mask: &[bool]) -> Vec<(bool, usize)> {
        let mut out: Vec<(bool, usize)> = Vec::new();
        for &m in mask {
            match out.last_mut() {
                Some((v, n)) if *v == m => *n += 1,
                _ => out.push((m, 1)),
            }
        }
        out
    }

    #[test]
    fn noise_mask_counts_are_t5s() {
        // Hand-computed: round(0.15·L), then round(noise/μ), rounding half to even.
        for (l, r, mu, noise, spans) in [
            (100, 0.15, 3.0, 15, 5),
            (10, 0.15, 3.0, 2, 1),      // 1.5 → 2
            (30, 0.15, 3.0, 4, 1),      // 4.5 → 4; 4/3 → 1
            (50, 0.5, 8.0, 25, 3),      // 3.125 → 3
            (64, 0.5, 64.0, 32, 1),     // 0.5 → 0 → clamped to 1
            (3, 0.15, 3.0, 1, 1),       // clamped up to one noise token
            (4, 0.9, 1.0, 3, 1),        // 3.6 → 4 → clamped to L - 1; spans ≤ non-noise
            (1000, 0.5, 1.0, 500, 100), // at most SENTINELS spans
        ] {
            assert_eq!(span_counts(l, r, mu), (noise, spans), "L={l} r={r} μ={mu}");
        }
        let mut rng = SplitMix64::new(1, 0);
        for l in 2..300 {
            for (r, mu) in [
                (0.15, 3.0),
                (0.15, 8.0),
                (0.5, 3.0),
                (0.5, 64.0),
                (0.3, 1.0),
            ] {
                let want_noise = ((l as f64 * r).round() as usize).clamp(1, l - 1);
                let mask = random_spans_noise_mask(l, r, mu, &mut rng);
                assert_eq!(mask.len(), l);
                let noise = mask.iter().filter(|&&m| m).count();
                let (n, spans) = span_counts(l, r, mu);
                assert_eq!(noise, n);
                // Ties aside (half to even), the noise count is round(r·L).
                assert!(noise.abs_diff(want_noise) <= 1);
                if (l as f64 * r).fract() != 0.5 {
                    assert_eq!(noise, want_noise, "L={l} r={r}");
                }
                let want_spans = ((noise as f64 / mu).round() as usize)
                    .clamp(1, 100)
                    .min(l - noise);
                if (noise as f64 / mu).fract() != 0.5 {
                    assert_eq!(spans, want_spans, "L={l} r={r} μ={mu}");
                }
                let rs = runs(&mask);
                assert!(!rs[0].0, "starts with non-noise");
                assert!(rs.last().unwrap().0, "ends with noise, as T5's does");
                assert_eq!(rs.iter().filter(|(v, _)| *v).count(), spans);
            }
        }
        assert_eq!(random_spans_noise_mask(1, 0.15, 3.0, &mut rng), vec![false]);
        assert!(random_spans_noise_mask(0, 0.15, 3.0, &mut rng).is_empty());
    }

    #[test]
    fn noise_spans_average_mu_and_vary() {
        for (r, mu) in [(0.15, 3.0), (0.5, 3.0), (0.15, 8.0), (0.5, 8.0)] {
            let mut rng = SplitMix64::new(2, 0);
            let mut lens = Vec::new();
            for seed in 0..400 {
                let l = 200 + seed % 200;
                let mask = random_spans_noise_mask(l, r, mu, &mut rng);
                lens.extend(runs(&mask).into_iter().filter(|(v, _)| *v).map(|(_, n)| n));
            }
            let mean = lens.iter().sum::<usize>() as f64 / lens.len() as f64;
            assert!(
                (mean - mu).abs() < 0.05 * mu,
                "r={r} μ={mu}: mean span {mean}"
            );
            let max = *lens.iter().max().unwrap();
            assert!(
                max as f64 > 2.0 * mu,
                "span lengths vary: max {max} for μ={mu}"
            );
        }
    }

    #[test]
    fn every_mask_is_equally_likely() {
        // L = 10, r = 0.3, μ = 1.5: 3 noise tokens in 2 spans (2 ways), 7 non-noise in 2 spans
        // (6 ways): 12 masks, each with probability 1/12.
        let mut rng = SplitMix64::new(3, 0);
        let draws = 12_000;
        let mut seen: Vec<(Vec<bool>, usize)> = Vec::new();
        for _ in 0..draws {
            let m = random_spans_noise_mask(10, 0.3, 1.5, &mut rng);
            match seen.iter_mut().find(|(s, _)| *s == m) {
                Some((_, n)) => *n += 1,
                None => seen.push((m, 1)),
            }
        }
        assert_eq!(seen.len(), 12);
        let sd = (draws as f64 * (1.0 / 12.0) * (11.0 / 12.0)).sqrt();
        for (m, n) in &seen {
            assert!(
                (*n as f64 - 1000.0).abs() < 4.0 * sd,
                "{m:?} drawn {n} times"
            );
        }
    }

    /// The raw window back from an example.
    fn reassemble(d: &Denoiser, ex: &Example) -> Vec<u32> {
        match d {
            Denoiser::Span { .. } => {
                assert_eq!(ex.targets.last(), Some(&EOS));
                let body = &ex.targets[..ex.targets.len() - 1];
                let mut out = Vec::new();
                for &t in &ex.inputs[1..] {
                    if !vocab::is_sentinel(t) {
                        out.push(t);
                        continue;
                    }
                    let at = body
                        .iter()
                        .position(|&s| s == t)
                        .expect("sentinel in targets");
                    let end = body[at + 1..]
                        .iter()
                        .position(|&s| vocab::is_sentinel(s))
                        .map_or(body.len(), |e| at + 1 + e);
                    assert!(end > at + 1, "empty span");
                    out.extend_from_slice(&body[at + 1..end]);
                }
                out
            }
            Denoiser::Prefix { .. } | Denoiser::Causal => {
                [&ex.inputs[1..], &ex.targets[..]].concat()
            }
        }
    }

    fn all_denoisers() -> Vec<Denoiser> {
        let mut ds: Vec<Denoiser> = Objective::Ul2
            .mixture(&MixtureOptions::default())
            .unwrap()
            .entries()
            .iter()
            .map(|(d, _)| *d)
            .collect();
        ds.push(Denoiser::Causal);
        ds.push(Denoiser::Prefix { mean_target: 0.8 });
        ds
    }

    #[test]
    fn examples_round_trip_to_the_raw_window() {
        let stream: Vec<u32> = (0..5000u32).map(|i| (i * 7919 + i / 13) % 256).collect();
        let mut rng = SplitMix64::new(4, 0);
        for d in all_denoisers() {
            for arch in [Arch::Decoder, Arch::EncDec] {
                for seq_len in [32, 64, 128] {
                    let len = raw_len(&d, arch, seq_len).unwrap();
                    for _ in 0..20 {
                        let start = rng.below(stream.len() - len);
                        let raw = &stream[start..start + len];
                        let ex = corrupt(&d, raw, 999, &mut rng);
                        assert_eq!(ex.inputs[0], 999);
                        assert_eq!(reassemble(&d, &ex), raw, "{}", d.describe());
                        if let Denoiser::Span { .. } = d {
                            let sentinels: Vec<u32> = ex
                                .inputs
                                .iter()
                                .copied()
                                .filter(|&t| vocab::is_sentinel(t))
                                .collect();
                            let want: Vec<u32> = (0..sentinels.len()).map(sentinel).collect();
                            assert_eq!(sentinels, want, "sentinels in order from 0");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn prefix_suffix_averages_the_mean_target() {
        let raw: Vec<u32> = (0..127).collect();
        let mut rng = SplitMix64::new(5, 0);
        let d = Denoiser::Prefix { mean_target: 0.25 };
        let n = 20_000;
        let total: usize = (0..n)
            .map(|_| corrupt(&d, &raw, S2S, &mut rng).targets.len())
            .sum();
        let frac = total as f64 / (n * raw.len()) as f64;
        // hi = round(63.5) = 64: mean (64 + 1)/2 = 32.5 of 127.
        assert!(
            (frac - 32.5 / 127.0).abs() < 0.005,
            "mean target fraction {frac}"
        );
        assert!((frac - 0.25).abs() < 0.01);
    }

    #[test]
    fn packed_examples_fit_every_mixture_arch_and_length() {
        let stream: Vec<u32> = (0..3000u32).map(|i| i % 251).collect();
        for objective in Objective::ALL {
            let mix = objective.mixture(&MixtureOptions::default()).unwrap();
            for arch in [Arch::Decoder, Arch::EncDec] {
                for seq_len in [32, 64, 128] {
                    let mut s =
                        Sampler::new(stream.clone(), mix.clone(), arch, seq_len, true, true, 1)
                            .unwrap();
                    let mut rng = SplitMix64::new(6, 0);
                    for (i, (d, _)) in mix.entries().iter().enumerate() {
                        let len = s.raw_lens()[i];
                        // The longest window fits, one token more would not (for some draw).
                        for _ in 0..30 {
                            let ex = corrupt(d, &stream[..len], NLU, &mut rng);
                            match arch {
                                Arch::Decoder => {
                                    assert!(ex.inputs.len() + ex.targets.len() <= seq_len)
                                }
                                Arch::EncDec => assert!(
                                    ex.inputs.len() <= seq_len && ex.targets.len() <= seq_len
                                ),
                            }
                        }
                        let over = (0..30).any(|_| {
                            let ex = corrupt(d, &stream[..len + 1], NLU, &mut rng);
                            match arch {
                                Arch::Decoder => ex.inputs.len() + ex.targets.len() > seq_len,
                                Arch::EncDec => {
                                    ex.inputs.len() > seq_len || ex.targets.len() > seq_len
                                }
                            }
                        });
                        // Spans: raw_len_is_the_longest_that_fits checks their counts. An
                        // encdec prefix one token longer overflows only when its suffix is 1.
                        let always_over = match d {
                            Denoiser::Span { .. } => false,
                            Denoiser::Prefix { .. } => arch == Arch::Decoder,
                            Denoiser::Causal => true,
                        };
                        if always_over {
                            assert!(over, "{} {arch:?}/{seq_len}: not the longest", d.describe());
                        }
                    }
                    for _ in 0..5 {
                        let b = s.next_batch(8);
                        b.check(vocab::VOCAB).unwrap();
                        assert!(b.len <= seq_len && b.enc_len <= seq_len);
                        for r in 0..8 {
                            let row = r * b.len..(r + 1) * b.len;
                            let (tok, tgt, w) = (
                                &b.tokens[row.clone()],
                                &b.targets[row.clone()],
                                &b.weights[row],
                            );
                            let weighted = w.iter().filter(|&&w| w > 0.0).count();
                            let last = w.iter().rposition(|&w| w > 0.0).unwrap();
                            assert!(tgt[last] != PAD);
                            match arch {
                                // The last weighted position predicts the last real token.
                                Arch::Decoder => {
                                    let real = tok.iter().rposition(|&t| t != PAD).unwrap();
                                    assert_eq!(last + 1, real);
                                }
                                Arch::EncDec => {
                                    assert_eq!(weighted, tgt.iter().filter(|&&t| t != PAD).count());
                                    assert_eq!(tok[0], BOS);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn raw_len_is_the_longest_that_fits() {
        let x64 = Denoiser::Span {
            mu: 3.0,
            r: 0.5,
            mode: Mode::X,
        };
        // Decoder, 64: L = 46 has 23 noise tokens in 8 spans: 46 + 16 + 2 = 64; L = 47, 48 give
        // 24 noise in 8 spans: 66 > 64 and beyond.
        assert_eq!(raw_len(&x64, Arch::Decoder, 64).unwrap(), 46);
        // EncDec, 64: inputs 1 + L - noise + spans, targets noise + spans + 1. L = 94: 47 noise
        // in round(15.67) = 16 spans: 64 and 64; L = 95: round(47.5) = 48 noise, 16 spans: the
        // targets take 65.
        let l = raw_len(&x64, Arch::EncDec, 64).unwrap();
        assert_eq!(l, 94);
        let (n, s) = span_counts(l, 0.5, 3.0);
        assert!(1 + l - n + s <= 64 && n + s < 64);
        for longer in l + 1..l + 10 {
            let (n, s) = span_counts(longer, 0.5, 3.0);
            assert!(
                1 + longer - n + s > 64 || n + s + 1 > 64,
                "L={longer} also fits"
            );
        }
        assert_eq!(raw_len(&Denoiser::Causal, Arch::Decoder, 64).unwrap(), 63);
        assert_eq!(raw_len(&Denoiser::Causal, Arch::EncDec, 64).unwrap(), 64);
        assert!(raw_len(&Denoiser::Causal, Arch::Decoder, 2).is_err());
        assert!(raw_len(&x64, Arch::Decoder, 5).is_err());
        assert_eq!(raw_len(&x64, Arch::Decoder, 6).unwrap(), 2);
    }

    #[test]
    fn pack_lays_out_a_hand_worked_example() {
        let ex = Example {
            inputs: vec![NLU, 10, sentinel(0), 11],
            targets: vec![sentinel(0), 20, 21, EOS],
        };
        let short = Example {
            inputs: vec![BOS],
            targets: vec![30, 31],
        };
        // Rows are as long as the longest example (8), not seq_len (10).
        let b = pack(&[ex.clone(), short.clone()], Arch::Decoder, 10, true);
        let (s0, p) = (sentinel(0), PAD);
        assert_eq!((b.rows, b.len, b.enc_len), (2, 8, 0));
        assert!(b.enc_tokens.is_empty() && b.enc_lens.is_empty());
        assert_eq!(
            b.tokens,
            [
                [NLU, 10, s0, 11, s0, 20, 21, EOS],
                [BOS, 30, 31, p, p, p, p, p]
            ]
            .concat()
        );
        assert_eq!(
            b.targets,
            [[10, s0, 11, s0, 20, 21, EOS, p], [30, 31, p, p, p, p, p, p]].concat()
        );
        let w = |v: [u8; 8]| v.map(f32::from);
        assert_eq!(
            b.weights,
            [w([0, 0, 0, 1, 1, 1, 1, 0]), w([1, 1, 0, 0, 0, 0, 0, 0])].concat()
        );
        assert_eq!(b.prefix, vec![4, 1]);
        assert_eq!(
            pack(std::slice::from_ref(&ex), Arch::Decoder, 10, false).prefix,
            vec![0]
        );
        // Truncated: the target that falls off the end is not weighted.
        let t = pack(std::slice::from_ref(&ex), Arch::Decoder, 6, false);
        assert_eq!(t.tokens, vec![NLU, 10, s0, 11, s0, 20]);
        assert_eq!(t.targets, vec![10, s0, 11, s0, 20, p]);
        assert_eq!(t.weights, w6([0, 0, 0, 1, 1, 0]));

        let b = pack(&[ex.clone(), short.clone()], Arch::EncDec, 6, true);
        assert_eq!((b.rows, b.len, b.enc_len), (2, 4, 4));
        assert_eq!(b.enc_tokens, vec![NLU, 10, s0, 11, BOS, p, p, p]);
        assert_eq!(b.enc_lens, vec![4, 1]);
        assert_eq!(b.tokens, vec![BOS, s0, 20, 21, BOS, 30, p, p]);
        assert_eq!(b.targets, vec![s0, 20, 21, EOS, 30, 31, p, p]);
        assert_eq!(b.weights, [w4([1, 1, 1, 1]), w4([1, 1, 0, 0])].concat());
        assert_eq!(b.prefix, vec![0, 0]);
        b.check(vocab::VOCAB).unwrap();
        // Truncated to seq_len on both sides.
        let t = pack(std::slice::from_ref(&ex), Arch::EncDec, 3, true);
        assert_eq!((t.len, t.enc_len), (3, 3));
        assert_eq!(t.enc_tokens, vec![NLU, 10, s0]);
        assert_eq!(t.targets, vec![s0, 20, 21]);
        // A causal encdec row has a one-token encoder.
        let c = pack(std::slice::from_ref(&short), Arch::EncDec, 6, false);
        assert_eq!((c.len, c.enc_len), (2, 1));
    }

    fn w4(v: [u8; 4]) -> [f32; 4] {
        v.map(f32::from)
    }

    fn w6(v: [u8; 6]) -> [f32; 6] {
        v.map(f32::from)
    }

    #[test]
    fn mixtures_are_named_validated_and_sampled_by_weight() {
        let ul2 = Objective::Ul2.mixture(&MixtureOptions::default()).unwrap();
        let described = ul2.describe();
        let names: Vec<&str> = described.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "R(μ=3, r=0.15)",
                "R(μ=8, r=0.15)",
                "X(μ=3, r=0.5)",
                "X(μ=8, r=0.5)",
                "X(μ=64, r=0.15)",
                "X(μ=64, r=0.5)",
                "S(prefix, target 25%)"
            ]
        );
        let weights: Vec<f64> = described.iter().map(|(_, w)| *w).collect();
        let want = [0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.2];
        assert!(weights.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12));
        assert_eq!(
            Objective::Clm
                .mixture(&MixtureOptions::default())
                .unwrap()
                .describe()[0]
                .0,
            "CLM"
        );

        let opts = MixtureOptions {
            span_scale: 0.25,
            s_target: 0.5,
            ul2_weights: [1.0, 0.0, 1.0],
        };
        let scaled = Objective::Ul2.mixture(&opts).unwrap().describe();
        assert_eq!(
            scaled.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["R(μ=3, r=0.15)", "R(μ=8, r=0.15)", "S(prefix, target 50%)"]
        );
        let x = MixtureOptions {
            ul2_weights: [0.0, 1.0, 0.0],
            ..opts
        };
        let scaled_x = Objective::Ul2.mixture(&x).unwrap().describe();
        assert_eq!(
            scaled_x.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            [
                "X(μ=3, r=0.5)",
                "X(μ=3, r=0.5)",
                "X(μ=16, r=0.15)",
                "X(μ=16, r=0.5)"
            ]
        );
        let sclm = Objective::Sclm.mixture(&opts).unwrap();
        assert_eq!(sclm.describe()[0].0, "R(μ=3, r=0.15)");

        let bad_opts = MixtureOptions {
            ul2_weights: [0.0; 3],
            ..MixtureOptions::default()
        };
        assert!(Objective::Ul2.mixture(&bad_opts).is_err());
        for bad in [
            (Denoiser::Causal, 0.0),
            (Denoiser::Causal, f64::NAN),
            (Denoiser::Prefix { mean_target: 1.0 }, 1.0),
            (
                Denoiser::Span {
                    mu: 0.5,
                    r: 0.15,
                    mode: Mode::R,
                },
                1.0,
            ),
            (
                Denoiser::Span {
                    mu: 3.0,
                    r: 0.0,
                    mode: Mode::R,
                },
                1.0,
            ),
        ] {
            assert!(Mixture::custom(vec![bad]).is_err(), "{bad:?}");
        }
        assert!(Mixture::custom(vec![]).is_err());

        let n = 20_000;
        let mut counts = [0usize; 7];
        let mut rng = SplitMix64::new(7, 0);
        for _ in 0..n {
            counts[ul2.sample(&mut rng)] += 1;
        }
        for (c, p) in counts.iter().zip(want) {
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!((*c as f64 - n as f64 * p).abs() < 4.0 * sd, "{counts:?}");
        }
    }

    #[test]
    fn sampler_is_seeded_counts_and_leads_with_mode_tokens() {
        let stream: Vec<u32> = (0..2000u32).map(|i| i % 256).collect();
        let mix = Objective::Ul2.mixture(&MixtureOptions::default()).unwrap();
        let make = |seed, mode_tokens| {
            Sampler::new(
                stream.clone(),
                mix.clone(),
                Arch::Decoder,
                64,
                mode_tokens,
                false,
                seed,
            )
            .unwrap()
        };
        let (mut a, mut b, mut c) = (make(1, true), make(1, true), make(2, true));
        let (x, y, z) = (a.next_batch(16), b.next_batch(16), c.next_batch(16));
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_eq!(a.counts(), b.counts());
        assert_eq!(a.counts().iter().sum::<u64>(), 16);
        for r in 0..16 {
            assert!([NLU, NLG, S2S].contains(&x.tokens[r * 64]));
        }
        let mut plain = make(1, false);
        let p = plain.next_batch(16);
        assert!((0..16).all(|r| p.tokens[r * 64] == BOS));
        assert!(
            Sampler::new(
                stream[..40].to_vec(),
                mix,
                Arch::Decoder,
                64,
                true,
                false,
                1
            )
            .is_err()
        );
    }
}
