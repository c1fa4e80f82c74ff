//! Seeded random search (issue 24): a stage's `search:` block samples some of its params from
//! distributions instead of listing their values, `n` samples crossed with the grid of its
//! `matrix:` axes.
//!
//! Reproducibility is the point, so the sampler obeys two rules:
//!
//! - Sample `i`'s value of a param depends only on the search's `seed`, `i` and the param's
//!   name — never on `n`, the other params or their order. Raising `n` adds samples and keeps
//!   the first ones (and so their cache entries); removing a param from the space (a `--set`
//!   that fixes it) leaves the others' values as they were.
//! - The arithmetic is integer hashing and IEEE basic operations (+ − × ÷), which every
//!   conforming machine rounds alike. `f64::exp`/`ln` call the platform's libm, which may differ
//!   by an ulp between machines and so move a value across a rounding boundary: `loguniform`
//!   uses this module's own [`exp`] and [`ln`]. Floats are then rounded to
//!   [`SIGNIFICANT_DIGITS`] significant digits through Rust's own exact decimal formatting and
//!   parsing (core's, not the platform's), so plans and labels read `lr=0.003123`.

use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::Value;

/// Significant digits a sampled float keeps (`uniform`, `loguniform`).
pub const SIGNIFICANT_DIGITS: usize = 4;

/// The largest `n` a search may ask for: every sample becomes an instance held in memory.
pub const MAX_SAMPLES: u64 = 1_000_000;

/// What a random search samples one parameter from.
#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    /// `uniform: [low, high]`: a float, uniform on `[low, high]` (low < high).
    Uniform { low: f64, high: f64 },
    /// `loguniform: [low, high]`: a float whose logarithm is uniform (0 < low < high).
    LogUniform { low: f64, high: f64 },
    /// `int: [low, high]`: an integer, uniform on `low..=high` (low < high).
    Int { low: i64, high: i64 },
    /// `choice: [a, b, …]`: one of the values, each as likely (at least one, none repeated).
    Choice(Vec<Value>),
}

impl Distribution {
    /// The names a pipeline writes, for messages.
    pub const NAMES: [&'static str; 4] = ["uniform", "loguniform", "int", "choice"];

    pub fn name(&self) -> &'static str {
        match self {
            Distribution::Uniform { .. } => "uniform",
            Distribution::LogUniform { .. } => "loguniform",
            Distribution::Int { .. } => "int",
            Distribution::Choice(_) => "choice",
        }
    }

    /// The value of sample `i` of `param` in a search seeded with `seed`.
    pub fn sample(&self, seed: u64, i: u64, param: &str) -> Value {
        let bits = sample_bits(seed, i, param);
        match self {
            Distribution::Uniform { low, high } => {
                let u = unit(bits);
                let x = low * (1.0 - u) + high * u;
                float(round_significant(x, digits(*low, *high)), *low, *high)
            }
            Distribution::LogUniform { low, high } => {
                let u = unit(bits);
                let x = exp(ln(*low) * (1.0 - u) + ln(*high) * u);
                float(round_significant(x, digits(*low, *high)), *low, *high)
            }
            Distribution::Int { low, high } => {
                let span = (i128::from(*high) - i128::from(*low) + 1) as u128;
                let offset = below(bits, span);
                Value::from((i128::from(*low) + offset as i128) as i64)
            }
            Distribution::Choice(values) => {
                values[below(bits, values.len() as u128) as usize].clone()
            }
        }
    }
}

/// A float sample kept within `[low, high]` (rounding may cross a bound written with more
/// digits than are kept), and never `-0`.
fn float(x: f64, low: f64, high: f64) -> Value {
    let x = x.clamp(low, high) + 0.0;
    Value::from(serde_json::Number::from_f64(x).expect("a sample between finite bounds is finite"))
}

impl fmt::Display for Distribution {
    /// `loguniform [0.0001, 0.1]`, `int [16, 64]`, `choice [shared, unshared]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let number = |x: f64| Value::from(serde_json::Number::from_f64(x).unwrap_or(0.into()));
        let items: Vec<Value> = match self {
            Distribution::Uniform { low, high } | Distribution::LogUniform { low, high } => {
                vec![number(*low), number(*high)]
            }
            Distribution::Int { low, high } => vec![Value::from(*low), Value::from(*high)],
            Distribution::Choice(values) => values.clone(),
        };
        write!(f, "{} [", self.name())?;
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match item {
                Value::String(s) => f.write_str(s)?,
                other => write!(f, "{other}")?,
            }
        }
        f.write_str("]")
    }
}

impl Serialize for Distribution {
    /// As written in a pipeline: `{"loguniform": [0.0001, 0.1]}`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Distribution::Uniform { low, high } | Distribution::LogUniform { low, high } => {
                map.serialize_entry(self.name(), &[low, high])?
            }
            Distribution::Int { low, high } => map.serialize_entry(self.name(), &[low, high])?,
            Distribution::Choice(values) => map.serialize_entry(self.name(), values)?,
        }
        map.end()
    }
}

/// A stage's `search:` block, validated and drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    /// Samples drawn (`n:`).
    pub n: u64,
    /// `seed:` (0 when not written).
    pub seed: u64,
    /// The sampled params and their distributions, in file order.
    pub params: Vec<(String, Distribution)>,
    /// The distinct samples in the order drawn, each the values of `params` in their order
    /// (normalised against the op's param types). A sample equal to an earlier one (a small
    /// `int` or `choice` space) would be the same instance, so it is dropped; dropping keeps
    /// the prefix rule: the samples of a smaller `n` are the first of a larger one.
    pub samples: Vec<Vec<Value>>,
}

impl Search {
    /// Draws sample `i` (its values of `params`, in order), before normalisation.
    pub fn draw(seed: u64, i: u64, params: &[(String, Distribution)]) -> Vec<Value> {
        params
            .iter()
            .map(|(name, d)| d.sample(seed, i, name))
            .collect()
    }

    /// Whether `key` is one of the sampled params.
    pub fn samples_param(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }
}

/// The samples without repeats, first occurrences kept in order.
pub(crate) fn distinct(samples: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    // Values have no `Hash`; their JSON text is equal exactly when they are.
    let mut seen = std::collections::HashSet::with_capacity(samples.len());
    samples
        .into_iter()
        .filter(|s| seen.insert(Value::Array(s.clone()).to_string()))
        .collect()
}

/// 64 random bits for sample `i` of `param`: FNV-1a of the name, then SplitMix64 rounds that
/// mix in the seed and the index. Integer arithmetic only: the same on every machine.
fn sample_bits(seed: u64, i: u64, param: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in param.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(splitmix(splitmix(h) ^ seed) ^ i)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A float uniform on `[0, 1)` from the top 53 bits (exact: a multiple of 2⁻⁵³).
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// An integer uniform on `0..span` (`span` ≤ 2⁶⁴): the high half of a 64×64-bit product
/// (Lemire's reduction; its bias, below span/2⁶⁴, is far below anything a search can see).
fn below(bits: u64, span: u128) -> u128 {
    (u128::from(bits) * span) >> 64
}

/// The significant digits a float sampled from `[low, high]` keeps: [`SIGNIFICANT_DIGITS`], and
/// one more for each factor of ten by which the bounds' magnitude exceeds ten times the
/// range's width, so a narrow range (`[1.00001, 1.00002]`) keeps about a thousand distinct
/// values instead of collapsing onto one. Divisions and comparisons only.
fn digits(low: f64, high: f64) -> usize {
    let mut ratio = low.abs().max(high.abs()) / (high - low);
    let mut digits = SIGNIFICANT_DIGITS;
    while ratio > 10.0 && digits < 17 {
        ratio /= 10.0;
        digits += 1;
    }
    digits
}

/// `x` rounded to `digits` significant digits: the float nearest the decimal Rust's formatter
/// writes (exact decimal rounding, then correctly rounded parsing, both in core: no platform
/// libm involved).
fn round_significant(x: f64, digits: usize) -> f64 {
    let text = format!("{:.*e}", digits - 1, x);
    text.parse().expect("Rust parses the floats it formats")
}

/// ln 2 split as fdlibm does: `LN2_HI` has its low 32 bits zero, so `k · LN2_HI` is exact for
/// every exponent `k`, and `LN2_LO` carries the rest.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// `2^k` for `k` in the normal range `-1022..=1023`, built from its bits.
fn pow2(k: i64) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// The natural logarithm of a positive finite `x`, from basic operations only (relative error
/// within a few ulp of the true value; tested against `f64::ln`).
pub(crate) fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    let (mut x, mut k) = (x, 0i64);
    if x < f64::MIN_POSITIVE {
        // Subnormal: scale into the normal range first.
        x *= pow2(54);
        k -= 54;
    }
    let bits = x.to_bits();
    k += ((bits >> 52) & 0x7ff) as i64 - 1023;
    // The mantissa in [1, 2), then in [√½, √2) so the series below converges fast.
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        k += 1;
    }
    // ln m = 2 atanh s = 2 (s + s³/3 + s⁵/5 + …), s = (m − 1)/(m + 1), |s| ≤ 0.172: 14 terms
    // take the remainder below 2⁻⁵³.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut series = 0.0;
    for j in (0..14).rev() {
        series = series * s2 + 1.0 / f64::from(2 * j + 1);
    }
    let k = k as f64;
    k * LN2_HI + (k * LN2_LO + 2.0 * s * series)
}

/// `e^y` for `y` whose result is finite (at most about 709.78), from basic operations only
/// (relative error within a few ulp; tested against `f64::exp`). Below about −745 it is 0.
pub(crate) fn exp(y: f64) -> f64 {
    debug_assert!(y.is_finite() && y < 709.8);
    if y < -746.0 {
        return 0.0;
    }
    // y = k ln 2 + r, |r| ≤ ½ ln 2 (about): e^y = 2^k e^r.
    let t = y * std::f64::consts::LOG2_E;
    let k = if t >= 0.0 {
        (t + 0.5) as i64
    } else {
        (t - 0.5) as i64
    };
    let kf = k as f64;
    let r = (y - kf * LN2_HI) - kf * LN2_LO;
    // Taylor series of e^r to r¹⁸/18!: the remainder is below 2⁻⁶⁰ for |r| ≤ 0.35.
    let mut e = 1.0;
    for j in (1..=18).rev() {
        e = 1.0 + e * r / f64::from(j);
    }
    // 2^k in two factors when it is outside the normal range (a subnormal result rounds once,
    // at the last multiplication).
    if (-1022..=1023).contains(&k) {
        e * pow2(k)
    } else {
        let half = k / 2;
        e * pow2(half) * pow2(k - half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Our `ln` and `exp` agree with the platform's to within 2 ulp (relative 4.5e-16) over the
    /// whole range a `loguniform` meets, subnormals included.
    #[test]
    fn deterministic_exp_and_ln_match_std_within_two_ulp() {
        let tolerance = 2.0 * f64::EPSILON;
        // Every positive finite float by its bits, in 1,000,003 steps: subnormals, both sides
        // of every power of two, and mantissas all over.
        let step = f64::MAX.to_bits() / 1_000_003;
        for bits in (1..f64::MAX.to_bits()).step_by(step as usize) {
            let x = f64::from_bits(bits);
            let (ours, std) = (ln(x), x.ln());
            assert!(
                (ours - std).abs() <= tolerance * std.abs(),
                "ln({x:e}) = {ours:e}, std {std:e}"
            );
        }
        let mut y = -708.0;
        while y < 709.7 {
            let (ours, std) = (exp(y), y.exp());
            assert!(
                (ours - std).abs() <= tolerance * std,
                "exp({y}) = {ours:e}, std {std:e}"
            );
            y += 0.000_713;
        }
        // Near 1 (ln ≈ 0, where an absolute error shows as a relative one) and in the
        // subnormal tail of exp.
        for x in [1.0, 1.0 + 1e-12, 1.0 - 1e-12, 0.75, 1.5, 2.0, 0.5] {
            assert!(
                (ln(x) - x.ln()).abs() <= 1e-16 + tolerance * x.ln().abs(),
                "ln({x})"
            );
        }
        for y in [-710.0, -720.0, -740.0, -745.0] {
            let (ours, std) = (exp(y), y.exp());
            // Subnormals keep fewer bits: one unit of the last place they have.
            assert!(
                (ours - std).abs() <= 2.0 * 5e-324_f64.max(std * tolerance),
                "exp({y})"
            );
        }
    }

    #[test]
    fn rounding_keeps_four_significant_digits_more_for_narrow_ranges() {
        let four = |x| round_significant(x, 4);
        assert_eq!(four(0.003_123_456), 0.003_123);
        assert_eq!(four(123_456.0), 123_500.0);
        assert_eq!(four(0.099_996), 0.1);
        assert_eq!(four(-1.234_56e-7), -1.235e-7);
        assert_eq!(json!(four(0.000_312_34)).to_string(), "0.0003123");
        assert_eq!(digits(1e-4, 1e-1), 4);
        assert_eq!(digits(0.0, 0.1), 4);
        assert_eq!(digits(-1.0, 1.0), 4);
        assert_eq!(digits(9.0, 10.0), 4);
        assert_eq!(digits(9.5, 10.0), 5);
        assert_eq!(digits(1.000_01, 1.000_02), 9);
        assert_eq!(digits(1e300, 1e300 * (1.0 + 1e-15)), 17);
    }

    fn space() -> Vec<(String, Distribution)> {
        vec![
            (
                "lr".into(),
                Distribution::LogUniform {
                    low: 1e-4,
                    high: 1e-1,
                },
            ),
            (
                "weight_decay".into(),
                Distribution::Uniform {
                    low: 0.0,
                    high: 0.1,
                },
            ),
            ("hidden".into(), Distribution::Int { low: 16, high: 64 }),
            (
                "weights".into(),
                Distribution::Choice(vec![json!("shared"), json!("unshared")]),
            ),
        ]
    }

    /// Golden values: the sampler's output is part of every cache key a search makes, so any
    /// change to it (hash, reduction, exp/ln, rounding) must fail here, not silently rerun
    /// every search.
    #[test]
    fn samples_are_pinned() {
        let got: Vec<Vec<Value>> = (0..4).map(|i| Search::draw(7, i, &space())).collect();
        let want = vec![
            vec![json!(0.08741), json!(0.04672), json!(17), json!("shared")],
            vec![
                json!(0.0004197),
                json!(0.08697),
                json!(58),
                json!("unshared"),
            ],
            vec![json!(0.007108), json!(0.05652), json!(24), json!("shared")],
            vec![
                json!(0.0008193),
                json!(0.07933),
                json!(57),
                json!("unshared"),
            ],
        ];
        assert_eq!(got, want);
        // Another seed gives other values.
        assert_ne!(Search::draw(8, 0, &space()), got[0]);
    }

    #[test]
    fn a_value_depends_on_seed_index_and_name_only() {
        let d = Distribution::Uniform {
            low: 0.0,
            high: 1.0,
        };
        // The same (seed, i, name) in another space, another position: the same value.
        let alone = vec![("weight_decay".to_owned(), space()[1].1.clone())];
        for i in 0..50 {
            assert_eq!(
                Search::draw(7, i, &alone)[0],
                Search::draw(7, i, &space())[1]
            );
        }
        // Names and indices are not interchangeable.
        assert_ne!(d.sample(7, 0, "a"), d.sample(7, 0, "b"));
        assert_ne!(d.sample(7, 0, "a"), d.sample(7, 1, "a"));
        assert_ne!(d.sample(7, 1, "a"), d.sample(8, 0, "a"));
    }

    #[test]
    fn samples_stay_within_their_bounds_and_cover_them() {
        let n = 4000;
        let cases = [
            Distribution::Uniform {
                low: -1.0,
                high: 1.0,
            },
            Distribution::Uniform {
                low: 1.000_01,
                high: 1.000_02,
            },
            Distribution::LogUniform {
                low: 1e-8,
                high: 1e3,
            },
            Distribution::LogUniform {
                low: 0.123_456_7,
                high: 0.123_456_9,
            },
        ];
        for d in &cases {
            let (Distribution::Uniform { low, high } | Distribution::LogUniform { low, high }) = *d
            else {
                unreachable!()
            };
            let xs: Vec<f64> = (0..n)
                .map(|i| d.sample(1, i, "x").as_f64().unwrap())
                .collect();
            assert!(xs.iter().all(|x| (low..=high).contains(x)), "{d}");
            let lo_quarter = xs
                .iter()
                .filter(|&&x| match d {
                    Distribution::LogUniform { .. } => x.ln() < low.ln() + (high / low).ln() / 4.0,
                    _ => x < low + (high - low) / 4.0,
                })
                .count();
            // A quarter of the range gets about a quarter of the samples.
            assert!((800..1200).contains(&lo_quarter), "{d}: {lo_quarter}");
        }
        let d = Distribution::Int { low: -2, high: 2 };
        let mut counts = [0; 5];
        for i in 0..n {
            counts[(d.sample(3, i, "k").as_i64().unwrap() + 2) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (700..900).contains(&c)),
            "{counts:?}"
        );
        let wide = Distribution::Int {
            low: i64::MIN,
            high: i64::MAX,
        };
        assert!(wide.sample(3, 0, "k").is_i64());
        let d = Distribution::Choice(vec![json!(1), json!("b"), json!(null)]);
        let nulls = (0..n).filter(|&i| d.sample(5, i, "c").is_null()).count();
        assert!((1200..1460).contains(&nulls), "{nulls}");
    }

    #[test]
    fn distinct_keeps_first_occurrences_in_order() {
        let s = |v: i64| vec![json!(v)];
        assert_eq!(
            distinct(vec![s(3), s(1), s(3), s(2), s(1)]),
            vec![s(3), s(1), s(2)]
        );
    }

    #[test]
    fn distributions_display_and_serialise_as_written() {
        let shown: Vec<String> = space().iter().map(|(_, d)| d.to_string()).collect();
        assert_eq!(
            shown,
            [
                "loguniform [0.0001, 0.1]",
                "uniform [0.0, 0.1]",
                "int [16, 64]",
                "choice [shared, unshared]"
            ]
        );
        assert_eq!(
            serde_json::to_value(&space()[0].1).unwrap(),
            json!({"loguniform": [0.0001, 0.1]})
        );
        assert_eq!(
            serde_json::to_value(&space()[3].1).unwrap(),
            json!({"choice": ["shared", "unshared"]})
        );
    }
}
