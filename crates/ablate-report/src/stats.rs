//! The summary statistics every aggregation shares — `report.table`'s cells, a plot's points
//! and a claim's `mean(…)`/`std(…)`/`median(…)`/`diff(…)` — so one set of numbers means one
//! thing everywhere: a sample standard deviation (n − 1), summed in input order; quantiles by
//! linear interpolation (R's type 7, numpy's default); the interquartile mean with fractional
//! weights at the quartiles; and a seeded bootstrap for intervals of a mean (the expanded
//! percentile interval, so a few seeds do not give an overconfident one), which gives the same
//! bits on every machine and every run (#25).
//!
//! References: Agarwal et al., "Deep reinforcement learning at the edge of the statistical
//! precipice", NeurIPS 2021 (rliable: the IQM, bootstrap intervals over few seeds); Bouthillier
//! et al., "Accounting for variance in machine learning benchmarks", MLSys 2021 (pairing the
//! sources of variation two settings share); Hesterberg, "What teachers should know about the
//! bootstrap", The American Statistician 69(4), 2015 (the expanded percentile interval).

use std::cmp::Ordering;

/// The mean of `values`, summed in input order; NaN for none.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The mean of `values`, or `None` for none (where a caller must tell "no value" from NaN).
pub fn mean_of(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| mean(values))
}

/// Mean and sample standard deviation (n − 1) of `values`; the deviation is `None` for fewer
/// than two values (a sample standard deviation of one value is undefined), the mean NaN for
/// none. Sums run in input order, so a caller gets the same bits wherever it asks.
pub fn mean_std(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = mean(values);
    if values.len() < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some(var.sqrt()))
}

/// The median of `values` (the mean of the middle two for an even count: what [`quantile`]
/// gives at 0.5, up to rounding); NaN-safe ordering (`total_cmp`). Panics on an empty slice: a
/// caller has checked that there is a value.
pub fn median(values: &[f64]) -> f64 {
    let sorted = sorted(values);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

/// The `q` quantile (`0 ≤ q ≤ 1`) of `values` by linear interpolation between order
/// statistics: with the values sorted as x₀ ≤ … ≤ xₙ₋₁ and h = (n − 1)·q, it is
/// x⌊h⌋ + (h − ⌊h⌋)·(x⌊h⌋₊₁ − x⌊h⌋). This is R's `quantile(type = 7)` and numpy's default
/// (`method="linear"`), computed as numpy does (from the upper end when h − ⌊h⌋ ≥ 0.5), so the
/// two agree to the bit. Panics on an empty slice.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    quantile_sorted(&sorted(values), q)
}

fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "the quantile of no values");
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = h - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// The interquartile mean: the mean of the middle 50% of the values, i.e. twice the integral
/// of the empirical quantile function from 0.25 to 0.75. Sorted, each value holds the
/// probability mass [i/n, (i+1)/n); its weight is the part of that interval inside
/// [0.25, 0.75], times 2, so a value straddling a quartile counts fractionally. For n divisible
/// by 4 this is scipy's `trim_mean(x, 0.25)` (what rliable computes: the lowest and highest
/// n/4 dropped, the rest averaged); for other n, `trim_mean` drops ⌊n/4⌋ whole values from each
/// end, while this keeps the fraction of the boundary values that lies inside the quartiles
/// (n = 3: weights 1/6, 2/3, 1/6; n = 5: 0.3, 0.4, 0.3), so the IQM does not jump as seeds are
/// added. Robust to one outlier per quarter; n = 1 and 2 give the mean. Panics on an empty
/// slice.
pub fn iqm(values: &[f64]) -> f64 {
    let sorted = sorted(values);
    let n = sorted.len() as f64;
    assert!(!sorted.is_empty(), "the IQM of no values");
    sorted
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let (start, end) = (i as f64 / n, (i + 1) as f64 / n);
            let inside = (end.min(0.75) - start.max(0.25)).max(0.0);
            2.0 * inside * x
        })
        .sum()
}

/// How a bootstrap interval is drawn: its level (0.95: the 2.5% and 97.5% quantiles) and the
/// number of resamples.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub level: f64,
    pub resamples: usize,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            level: 0.95,
            resamples: 10_000,
        }
    }
}

impl Bootstrap {
    /// "95% bootstrap CI of the mean (percentile, 10,000 resamples)": what a caption says.
    pub fn describe(&self) -> String {
        format!(
            "{} bootstrap confidence interval of the mean ({})",
            percent(self.level),
            self.method()
        )
    }

    /// "expanded percentile method, 10,000 resamples, seeded by the values".
    pub fn method(&self) -> String {
        format!(
            "expanded percentile method, {} resamples, seeded by the values",
            self.resamples_text()
        )
    }

    /// "10,000".
    pub fn resamples_text(&self) -> String {
        thousands(self.resamples)
    }
}

/// `95%`, `99.9%`.
pub fn percent(level: f64) -> String {
    format!("{}%", (level * 1e6).round() / 1e4)
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An interval `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The bootstrap confidence interval of the mean of `values`: `b.resamples` times, draw n
/// values with replacement and take their mean; the interval is the α′ and 1 − α′
/// [`quantile`]s of those means, where α′ is [`expanded_tail`]`(n, level)` (the plain
/// percentile interval would take α = (1 − level)/2). `None` for fewer than two values (one
/// value has no spread to resample) or a NaN among them.
///
/// Why expanded: the bootstrap distribution of a mean is narrower than the mean's own, by
/// √((n − 1)/n) in its spread and by using a normal rather than a Student t tail, so the
/// plain percentile interval covers less than its level with few values (measured by
/// simulation, normal data, 95%: 83% with 5 values, 88% with 8, 90% with 10). Expanded as
/// Hesterberg (2015) recommends, it covers 92.5%, 94.5% and 94.4% there. Neither can reach
/// past the range of the values, which holds the mean with probability 1 − 2^(1 − n) at most
/// for a symmetric spread: 75% with 3 values, 87.5% with 4; [`range_coverage`] says so where a
/// caption needs it.
///
/// Reproducible: the draws come from [`SplitMix64`] seeded by [`seed_of`] the values, and the
/// values are sorted first, so the same multiset of values gives the same bits whatever their
/// order, machine or run; a different level reuses the same draws (a 90% interval sits inside
/// the 95% one).
pub fn bootstrap_mean(values: &[f64], b: Bootstrap) -> Option<Interval> {
    bootstrap(values, b, |n| expanded_tail(n, b.level), mean)
}

/// The percentile bootstrap confidence interval of the [`iqm`] of `values`, as rliable gives
/// it: the (1 − level)/2 and (1 + level)/2 quantiles of the IQMs of the resamples, drawn as
/// [`bootstrap_mean`] draws them. Not expanded: the expansion corrects the spread of a mean's
/// bootstrap distribution, and has no such argument for a trimmed mean; so with few values
/// this interval is the narrower of the two, and bounded by the range of the values all the
/// same. `None` as for [`bootstrap_mean`].
pub fn bootstrap_iqm(values: &[f64], b: Bootstrap) -> Option<Interval> {
    bootstrap(values, b, |_| (1.0 - b.level) / 2.0, iqm)
}

/// The `tail(n)` and 1 − `tail(n)` quantiles of `stat` over `b.resamples` seeded resamples of
/// the n `values`.
fn bootstrap(
    values: &[f64],
    b: Bootstrap,
    tail: impl FnOnce(usize) -> f64,
    stat: fn(&[f64]) -> f64,
) -> Option<Interval> {
    if values.len() < 2 || values.iter().any(|x| x.is_nan()) || b.resamples == 0 {
        return None;
    }
    let sorted = sorted(values);
    let n = sorted.len();
    let mut rng = SplitMix64(seed_of(&sorted));
    let mut resample = vec![0.0; n];
    let mut stats: Vec<f64> = (0..b.resamples)
        .map(|_| {
            for x in &mut resample {
                *x = sorted[rng.below(n)];
            }
            stat(&resample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let tail = tail(n);
    Some(Interval {
        low: quantile_sorted(&stats, tail),
        high: quantile_sorted(&stats, 1.0 - tail),
    })
}

/// The lower tail α′ of the expanded percentile interval of a mean of `n ≥ 2` values at
/// `level`: Φ(√(n/(n − 1)) · t⁻¹ₙ₋₁((1 − level)/2)), with Φ the standard normal CDF and t⁻¹ₙ₋₁
/// the quantile of Student's t with n − 1 degrees of freedom (Hesterberg 2015, §4.4; the
/// `resample` R package's `expand = TRUE`). The plain percentile interval's α is
/// (1 − level)/2; α′ is smaller, and tends to it as n grows: at 95%, 0.0086 for n = 10 and
/// 6.8·10⁻⁸ for n = 3 (where the interval becomes the range of the draws).
pub fn expanded_tail(n: usize, level: f64) -> f64 {
    assert!(n >= 2, "an interval of fewer than two values");
    let df = (n - 1) as u32;
    let t = student_t_quantile((1.0 - level) / 2.0, df);
    normal_cdf((n as f64 / (n - 1) as f64).sqrt() * t)
}

/// The most an interval within the range of n values can cover the mean of a symmetric spread:
/// all n values fall on one side of it with probability 2 · 2⁻ⁿ, so 1 − 2^(1 − n) (75% for 3
/// values, 87.5% for 4, 93.75% for 5). `None` when that is at least `level`: the range is then
/// no limit.
pub fn range_coverage(n: usize, level: f64) -> Option<f64> {
    let most = 1.0 - 2f64.powi(1 - n.min(1_000) as i32);
    (most < level).then_some(most)
}

/// What a caption adds where the fewest values behind its intervals, `fewest`, cannot reach
/// their `level` ([`range_coverage`]): "With 3 values an interval lies within their range,
/// which holds their mean at most 75% of the time (…): read it as the least uncertainty there
/// is." `noun` names the values (`values`, `paired differences`); `None` where nothing is that
/// few.
pub fn range_caveat(fewest: Option<usize>, level: f64, noun: &str) -> Option<String> {
    let n = fewest?;
    let most = range_coverage(n, level)?;
    Some(format!(
        "With {n} {noun} an interval lies within their range, which holds their mean at most {} \
         of the time (1 − 2^(1 − n), for a symmetric spread): read it as the least uncertainty \
         there is.",
        percent(most)
    ))
}

/// P(T ≤ t) for Student's t with `df ≥ 1` (whole) degrees of freedom, by the finite series in
/// θ = atan(|t|/√df) of Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df) for
/// A = P(|T| ≤ |t|), with no incomplete beta function: exact up to rounding, in absolute
/// terms (a far tail, 0.5 − A/2 with A near 1, keeps ~1e-16 absolute, not relative, precision).
pub fn student_t_cdf(t: f64, df: u32) -> f64 {
    assert!(df >= 1, "Student's t with no degrees of freedom");
    let theta = (t.abs() / f64::from(df).sqrt()).atan();
    let (sin, cos) = theta.sin_cos();
    let cos2 = cos * cos;
    // The sum of the series' terms, each the one before times k/(k + 1) · cos²θ.
    let series = |first: f64, mut k: f64, terms: u32| {
        let (mut term, mut sum) = (first, first);
        for _ in 1..terms {
            term *= k / (k + 1.0) * cos2;
            sum += term;
            k += 2.0;
        }
        sum
    };
    let a = if df % 2 == 1 {
        // (2/π)(θ + sinθ(cosθ + (2/3)cos³θ + … + (2·4···(df − 3))/(1·3···(df − 2))cos^(df − 2)θ))
        let inner = if df == 1 {
            0.0
        } else {
            series(cos, 2.0, (df - 1) / 2)
        };
        std::f64::consts::FRAC_2_PI * (theta + sin * inner)
    } else {
        // sinθ(1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + … + (1·3···(df − 3))/(2·4···(df − 2))cos^(df − 2)θ)
        sin * series(1.0, 1.0, df / 2)
    };
    if t >= 0.0 {
        0.5 + a / 2.0
    } else {
        0.5 - a / 2.0
    }
}

/// The `p` quantile (0 < p < 1) of Student's t with `df` degrees of freedom: [`student_t_cdf`]
/// inverted by bisection, to the last bits of an f64.
pub fn student_t_quantile(p: f64, df: u32) -> f64 {
    assert!(p > 0.0 && p < 1.0, "the {p} quantile");
    if p > 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    let mut low = -1.0;
    while student_t_cdf(low, df) > p {
        low *= 2.0;
    }
    let mut high = 0.0;
    for _ in 0..200 {
        let mid = (low + high) / 2.0;
        if mid <= low || mid >= high {
            break;
        }
        if student_t_cdf(mid, df) > p {
            high = mid;
        } else {
            low = mid;
        }
    }
    (low + high) / 2.0
}

/// Φ(x), the standard normal CDF: erfc(−x/√2)/2, with erfc from Numerical Recipes' Chebyshev
/// fit (`erfcc`, fractional error below 1.2·10⁻⁷ everywhere, so also deep in the tails that
/// [`expanded_tail`] reaches).
pub fn normal_cdf(x: f64) -> f64 {
    let z = -x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z.abs());
    let poly = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| c + t * acc);
    let erfc = t * (-z * z + poly).exp();
    0.5 * if z >= 0.0 { erfc } else { 2.0 - erfc }
}

/// The seed of a bootstrap over `values` (in the order given): the values' bits and their
/// count, mixed with SplitMix64's finaliser. Fixed data, fixed seed: a table is reproducible
/// bit for bit, and no global state or clock is involved.
pub fn seed_of(values: &[f64]) -> u64 {
    values
        .iter()
        .fold(mix(values.len() as u64), |h, x| mix(h ^ x.to_bits()))
}

/// SplitMix64 (Steele, Lea & Flood, OOPSLA 2014): a 64-bit state advanced by a constant and
/// scrambled; small, fast and statistically sound for drawing resample indices.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` by multiply-and-shift (Lemire): the bias is below n / 2⁶⁴.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The paired difference of two sides over the keys (seeds) both have: the mean of
/// `a − b` per shared key, how many keys, and its bootstrap interval (`None` for fewer than two
/// pairs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    pub mean: f64,
    pub n: usize,
    pub interval: Option<Interval>,
}

/// Why two sides could not be paired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpaired {
    /// No key is on both sides.
    NoSharedKey,
    /// A side has a key twice: which pair would be ambiguous.
    RepeatedKey,
}

/// Pairs `a` and `b` by key (`cmp` orders keys) and gives the mean of the differences
/// `a − b` over the keys both sides have, with the bootstrap interval of that mean (`b`
/// `None`: no interval). Pairing removes what the two sides share per key (a seed's data order
/// and initialisation), so when that is most of the variation, the paired interval is much
/// narrower than the one two unpaired means would give. A key on one side only is left out.
pub fn paired<K>(
    a: &[(K, f64)],
    b: &[(K, f64)],
    cmp: impl Fn(&K, &K) -> Ordering,
    boot: Option<Bootstrap>,
) -> Result<Paired, Unpaired> {
    let sorted_side = |side: &[(K, f64)]| -> Result<Vec<usize>, Unpaired> {
        let mut order: Vec<usize> = (0..side.len()).collect();
        order.sort_by(|&i, &j| cmp(&side[i].0, &side[j].0));
        if order
            .windows(2)
            .any(|w| cmp(&side[w[0]].0, &side[w[1]].0).is_eq())
        {
            return Err(Unpaired::RepeatedKey);
        }
        Ok(order)
    };
    let (ia, ib) = (sorted_side(a)?, sorted_side(b)?);
    // Merge the two sorted key lists: differences in key order, so the bits do not depend on
    // the order the instances came in.
    let (mut i, mut j) = (0, 0);
    let mut diffs = Vec::new();
    while i < ia.len() && j < ib.len() {
        match cmp(&a[ia[i]].0, &b[ib[j]].0) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                diffs.push(a[ia[i]].1 - b[ib[j]].1);
                i += 1;
                j += 1;
            }
        }
    }
    if diffs.is_empty() {
        return Err(Unpaired::NoSharedKey);
    }
    Ok(Paired {
        mean: mean(&diffs),
        n: diffs.len(),
        interval: boot.and_then(|b| bootstrap_mean(&diffs, b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_is_the_sample_deviation_of_a_hand_worked_example() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum to 32, 32 / 7 (n − 1).
        let (mean, std) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(mean, 5.0);
        assert!((std.unwrap() - (32.0_f64 / 7.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn mean_std_of_one_value_has_no_deviation() {
        assert_eq!(mean_std(&[0.25]), (0.25, None));
        assert!(mean_std(&[]).0.is_nan());
        assert_eq!(mean_of(&[]), None);
        assert_eq!(mean_of(&[1.0, 2.0]), Some(1.5));
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), 2.5);
    }

    /// The expected numbers are numpy 2.4's: `np.quantile(x, q)` (method "linear", R type 7)
    /// for this `x`, printed with `repr` (so each literal is the very f64 numpy returned).
    #[test]
    fn quantiles_match_numpy_to_the_bit() {
        let x = [0.91, 0.87, 0.95, 0.62, 0.99, 0.88, 0.93, 0.90];
        let numpy = [
            (0.0, 0.62),
            (0.1, 0.795),
            (0.25, 0.8775),
            (0.5, 0.905),
            (0.75, 0.935),
            (0.9, 0.962),
            (1.0, 0.99),
        ];
        for (q, expected) in numpy {
            assert_eq!(quantile(&x, q), expected, "q = {q}");
        }
        assert_eq!(quantile(&[7.0], 0.3), 7.0);
    }

    /// scipy 1.17: `trim_mean(x, 0.25)` is 0.905 for the vector above (n = 8) and
    /// 4.166666666666667 for `y` (n = 12); with n divisible by 4 the IQM is exactly that.
    #[test]
    fn iqm_is_scipys_trim_mean_for_n_divisible_by_4() {
        let x = [0.91, 0.87, 0.95, 0.62, 0.99, 0.88, 0.93, 0.90];
        assert!((iqm(&x) - 0.905).abs() < 1e-15);
        let y = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0];
        assert!((iqm(&y) - 4.166666666666667).abs() < 1e-14);
    }

    /// By hand. n = 4: 1, 2, 3, 100 → the middle two, (2 + 3) / 2 = 2.5: the outlier is gone,
    /// where the mean is 26.5. n = 3: 1, 2, 30 hold [0, ⅓), [⅓, ⅔), [⅔, 1); inside [¼, ¾):
    /// 1/12, 1/3, 1/12 → weights 1/6, 2/3, 1/6 → 1/6 + 4/3 + 5 = 6.5. n = 5: 0, 10, 20, 30,
    /// 1000 → 0.3·10 + 0.4·20 + 0.3·30 = 20 (scipy drops one value each end: also 20 here, but
    /// with 0, 10, 20, 60, 1000 scipy gives 30 and this 0.3·10 + 8 + 0.3·60 = 29).
    #[test]
    fn iqm_of_hand_worked_examples() {
        assert_eq!(iqm(&[100.0, 2.0, 1.0, 3.0]), 2.5);
        assert!((iqm(&[30.0, 1.0, 2.0]) - 6.5).abs() < 1e-12);
        assert!((iqm(&[0.0, 10.0, 20.0, 30.0, 1000.0]) - 20.0).abs() < 1e-12);
        assert!((iqm(&[0.0, 10.0, 20.0, 60.0, 1000.0]) - 29.0).abs() < 1e-12);
        assert_eq!(iqm(&[0.25]), 0.25);
        assert_eq!(iqm(&[1.0, 2.0]), 1.5);
    }

    /// The exact bootstrap distribution of the mean: all nⁿ equally likely resamples (index
    /// tuples), enumerated.
    fn exact_means(values: &[f64]) -> Vec<f64> {
        let n = values.len();
        let total = n.pow(n as u32);
        let mut means: Vec<f64> = (0..total)
            .map(|mut code| {
                let mut sum = 0.0;
                for _ in 0..n {
                    sum += values[code % n];
                    code /= n;
                }
                sum / n as f64
            })
            .collect();
        means.sort_by(f64::total_cmp);
        means
    }

    /// The seeded Monte-Carlo interval against the exact bootstrap distribution, for n = 3, 4
    /// and 5 (27, 256 and 3,125 resamples enumerated). The Monte-Carlo endpoint is a quantile of
    /// 10,000 draws; by the Dvoretzky–Kiefer–Wolfowitz inequality the empirical CDF of the draws
    /// is within ε = 0.02 of the exact CDF everywhere except with probability 2·e^(−2·10⁴·ε²) <
    /// 0.001. So the exact CDF just below the low endpoint is at most 0.025 + ε (+ 2/B for the
    /// interpolation between draws) and at the endpoint at least 0.025 − ε, and likewise at the
    /// high end around 0.975. Which draws are made is fixed by the seed, so this cannot flake.
    #[test]
    fn the_monte_carlo_interval_matches_the_exact_bootstrap_distribution() {
        let boot = Bootstrap::default();
        let eps = 0.02 + 2.0 / boot.resamples as f64;
        for values in [
            vec![0.82, 0.91, 0.86],
            vec![0.1, 0.5, 0.9, 2.0],
            vec![0.1, 0.5, 0.9, 2.0, 3.7],
            vec![0.93, 0.94, 0.91, 0.95, 0.99],
        ] {
            let exact = exact_means(&values);
            let total = exact.len() as f64;
            let cdf_below =
                |v: f64| exact.iter().filter(|m| **m < v - 1e-12).count() as f64 / total;
            let cdf_at = |v: f64| exact.iter().filter(|m| **m <= v + 1e-12).count() as f64 / total;
            let ci = bootstrap_mean(&values, boot).unwrap();
            let tail = expanded_tail(values.len(), boot.level);
            for (end, p) in [(ci.low, tail), (ci.high, 1.0 - tail)] {
                assert!(
                    cdf_below(end) <= p + eps && cdf_at(end) >= p - eps,
                    "{values:?}: endpoint {end} has exact CDF [{}, {}], wanted about {p}",
                    cdf_below(end),
                    cdf_at(end)
                );
            }
            // And against the exact percentile interval, in the data's units: within a tenth
            // of its width. Only for n = 5: with 27 or 256 atoms, interpolating between the
            // sorted atoms (type 7) lands between atoms that the CDF check above shows the
            // Monte-Carlo endpoint rightly sits on (n = 3: the lowest mean alone has mass 1/27
            // > 2.5%, so the 2.5% quantile is that atom).
            if values.len() < 5 {
                continue;
            }
            let exact_ci = (
                quantile_sorted(&exact, tail),
                quantile_sorted(&exact, 1.0 - tail),
            );
            let width = exact_ci.1 - exact_ci.0;
            assert!(
                (ci.low - exact_ci.0).abs() <= 0.1 * width,
                "{values:?}: {ci:?} vs {exact_ci:?}"
            );
            assert!(
                (ci.high - exact_ci.1).abs() <= 0.1 * width,
                "{values:?}: {ci:?} vs {exact_ci:?}"
            );
        }
    }

    /// The IQM's interval against its exact bootstrap distribution (all 4⁴ = 256 and 5⁵ =
    /// 3,125 resamples enumerated, the IQM of each), at the plain 2.5% and 97.5% levels, within
    /// the Dvoretzky–Kiefer–Wolfowitz margin of the test above; and it resists an outlier where
    /// the mean's interval does not.
    #[test]
    fn the_iqm_interval_matches_its_exact_bootstrap_distribution() {
        let boot = Bootstrap::default();
        let eps = 0.02 + 2.0 / boot.resamples as f64;
        for values in [vec![0.1, 0.5, 0.9, 2.0], vec![0.81, 0.84, 0.86, 0.9, 9.0]] {
            let n = values.len();
            let mut exact: Vec<f64> = (0..n.pow(n as u32))
                .map(|mut code| {
                    let resample: Vec<f64> = (0..n)
                        .map(|_| {
                            let x = values[code % n];
                            code /= n;
                            x
                        })
                        .collect();
                    iqm(&resample)
                })
                .collect();
            exact.sort_by(f64::total_cmp);
            let total = exact.len() as f64;
            let cdf_below =
                |v: f64| exact.iter().filter(|m| **m < v - 1e-12).count() as f64 / total;
            let cdf_at = |v: f64| exact.iter().filter(|m| **m <= v + 1e-12).count() as f64 / total;
            let ci = bootstrap_iqm(&values, boot).unwrap();
            for (end, p) in [(ci.low, 0.025), (ci.high, 0.975)] {
                assert!(
                    cdf_below(end) <= p + eps && cdf_at(end) >= p - eps,
                    "{values:?}: endpoint {end} has exact CDF [{}, {}], wanted about {p}",
                    cdf_below(end),
                    cdf_at(end)
                );
            }
        }
        // One wild seed (9.0 among 11 values near 0.85): the IQM's interval stays near them,
        // as only resamples with 4 or more copies of it (1.4% of them) take it in; the mean's
        // does not. (With 5 values, 2 copies are enough, 26% of resamples: no such luck.)
        let wild = [
            0.81, 0.84, 0.86, 0.9, 0.83, 0.85, 0.88, 0.82, 0.87, 0.89, 0.8, 9.0,
        ];
        let (by_iqm, by_mean) = (
            bootstrap_iqm(&wild, boot).unwrap(),
            bootstrap_mean(&wild, boot).unwrap(),
        );
        assert!(
            by_iqm.high < 1.0 && by_mean.high > 2.0,
            "{by_iqm:?} {by_mean:?}"
        );
        assert_eq!(bootstrap_iqm(&[0.5], boot), None);
    }

    #[test]
    fn the_interval_is_reproducible_and_depends_on_the_data_only() {
        let v = [0.91, 0.87, 0.95, 0.62];
        let boot = Bootstrap::default();
        let a = bootstrap_mean(&v, boot).unwrap();
        let b = bootstrap_mean(&[0.62, 0.95, 0.87, 0.91], boot).unwrap();
        assert_eq!(a.low.to_bits(), b.low.to_bits());
        assert_eq!(a.high.to_bits(), b.high.to_bits());
        // Other data: another seed and another interval.
        let w = [0.91, 0.87, 0.95, 0.63];
        assert_ne!(seed_of(&v), seed_of(&w));
        assert_ne!(bootstrap_mean(&w, boot).unwrap(), a);
        // Nested levels from the same draws.
        let ninety = bootstrap_mean(&v, Bootstrap { level: 0.9, ..boot }).unwrap();
        assert!(a.low <= ninety.low && ninety.high <= a.high);
        // The interval lies within the range of the data and holds the mean.
        assert!(0.62 <= a.low && a.low < mean(&v) && mean(&v) < a.high && a.high <= 0.95);
        assert_eq!(bootstrap_mean(&[0.5], boot), None);
        assert_eq!(bootstrap_mean(&[0.5, f64::NAN], boot), None);
    }

    /// Where pairing matters: each seed moves both settings together (seed 2 is a hard one),
    /// and `a` beats `b` by 0.01 on every seed. Unpaired, the spread across seeds swamps the
    /// difference; paired, it is exactly 0.01 everywhere, so the interval is [0.01, 0.01].
    #[test]
    fn pairing_by_seed_narrows_the_interval_of_a_difference() {
        let a = [(0, 0.91), (1, 0.81), (2, 0.61), (3, 0.86)];
        let b = [(2, 0.60), (0, 0.90), (3, 0.85), (1, 0.80), (4, 0.99)];
        let boot = Some(Bootstrap::default());
        let p = paired(&a, &b, i32::cmp, boot).unwrap();
        assert_eq!(p.n, 4, "seed 4 is on one side only");
        assert!((p.mean - 0.01).abs() < 1e-12);
        let ci = p.interval.unwrap();
        assert!((ci.low - 0.01).abs() < 1e-12 && (ci.high - 0.01).abs() < 1e-12);
        // Unpaired: the interval of each mean is ~0.2 wide and they overlap.
        let va: Vec<f64> = a.iter().map(|x| x.1).collect();
        let vb: Vec<f64> = b[..4].iter().map(|x| x.1).collect();
        let (ia, ib) = (
            bootstrap_mean(&va, Bootstrap::default()).unwrap(),
            bootstrap_mean(&vb, Bootstrap::default()).unwrap(),
        );
        assert!(ia.high - ia.low > 0.1 && ia.low < ib.high);
        assert_eq!(
            paired(&a, &[(7, 0.5)], i32::cmp, boot),
            Err(Unpaired::NoSharedKey)
        );
        assert_eq!(
            paired(&a, &[(1, 0.5), (1, 0.6)], i32::cmp, boot),
            Err(Unpaired::RepeatedKey)
        );
        let one = paired(&a, &[(1, 0.5)], i32::cmp, boot).unwrap();
        assert_eq!((one.n, one.interval), (1, None));
    }

    /// The expected numbers are scipy 1.17's (`stats.t.cdf`, `stats.t.ppf`, `stats.norm.cdf`,
    /// printed with `repr`): a reference computed another way (the incomplete beta function,
    /// Cephes' `ndtr`) than the series and Chebyshev fit here.
    #[test]
    fn student_t_and_normal_match_scipy() {
        let close = |got: f64, want: f64, rel: f64, what: &str| {
            assert!(
                (got - want).abs() <= rel * want.abs(),
                "{what}: {got} vs scipy's {want}"
            );
        };
        for (df, t, want) in [
            (1, -12.7, 0.025012163844672083),
            (1, 1.3, 0.7912855998398473),
            (2, -4.3, 0.025028577058545796),
            (2, -0.5, 0.33333333333333337),
            (3, -2.0, 0.06966298427942152),
            (3, 3.1, 0.9733522276928319),
            (4, -12.7, 0.00011070453577548286),
            (7, -4.3, 0.0017833008438835178),
            (9, -12.7, 2.3719190225986342e-07),
            (30, -12.7, 6.679087525019251e-14),
            (30, 1.3, 0.8982495207309416),
        ] {
            // Far tails lose relative precision (0.5 − A/2 with A near 1): absolute ~1e-16.
            let got = student_t_cdf(t, df);
            assert!(
                (got - want).abs() <= 1e-12 * want + 1e-15,
                "t cdf({t}, {df}): {got} vs scipy's {want}"
            );
        }
        assert_eq!(student_t_cdf(0.0, 5), 0.5);
        for (df, p, want) in [
            (1, 0.0005, -636.6192487687196),
            (1, 0.025, -12.706204736174705),
            (2, 0.025, -4.302652729749464),
            (4, 0.05, -2.131846786326651),
            (9, 0.025, -2.2621571627982053),
            (29, 0.0005, -3.659405019466333),
            (99, 0.3, -0.5260932405485903),
        ] {
            close(
                student_t_quantile(p, df),
                want,
                1e-11,
                &format!("t ppf({p}, {df})"),
            );
            close(student_t_quantile(1.0 - p, df), -want, 1e-11, "upper");
        }
        for (x, want) in [
            (-8.0, 6.22096057427174e-16),
            (-5.27, 6.821187941186243e-08),
            (-3.0, 0.0013498980316300933),
            (-1.0, 0.15865525393145707),
            (0.5, 0.6914624612740131),
            (2.5, 0.9937903346742238),
        ] {
            close(normal_cdf(x), want, 1.2e-7, &format!("norm cdf({x})"));
        }
        // Φ(√(n/(n − 1)) · t⁻¹ₙ₋₁(α)) from scipy.
        for (n, level, want) in [
            (3, 0.95, 6.834137311941282e-08),
            (3, 0.9, 0.00017428758710652604),
            (5, 0.95, 0.0009541005518824907),
            (8, 0.9, 0.021413680917346564),
            (10, 0.95, 0.008550639024406366),
            (30, 0.99, 0.002527506552649086),
        ] {
            close(
                expanded_tail(n, level),
                want,
                1e-6,
                &format!("α′({n}, {level})"),
            );
        }
        assert_eq!(range_coverage(3, 0.95), Some(0.75));
        assert_eq!(range_coverage(4, 0.95), Some(0.875));
        assert_eq!(range_coverage(5, 0.95), Some(0.9375));
        assert_eq!(range_coverage(6, 0.95), None);
        assert_eq!(range_coverage(10_000, 0.999), None);
    }

    /// Coverage, the property the expansion is for, by simulation: 1,000 samples of n normal
    /// values (mean 0) from a seeded generator, each with a 95% interval of 1,000 resamples;
    /// how often does it hold 0? The plain percentile interval is the 2.5% and 97.5% quantiles
    /// of the same draws. Seeded, so the counts are fixed: 0.928 expanded against 0.848 plain
    /// (n = 5), 0.946 against 0.912 (n = 10); a binomial standard error at 1,000 trials is
    /// about 0.008. (numpy's generator, 2,000 × 2,000, gave 0.925/0.834 and 0.944/0.900.)
    #[test]
    fn the_expanded_interval_covers_about_its_level_where_the_percentile_one_falls_short() {
        let mut rng = SplitMix64(7);
        // Box–Muller from two uniforms in (0, 1].
        let mut normal = || {
            let u = |r: &mut SplitMix64| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let (a, b) = (u(&mut rng), u(&mut rng));
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let boot = Bootstrap {
            level: 0.95,
            resamples: 1_000,
        };
        for (n, least) in [(5, 0.90), (10, 0.925)] {
            let (mut expanded, mut plain) = (0, 0);
            let trials = 1_000;
            for _ in 0..trials {
                let x: Vec<f64> = (0..n).map(|_| normal()).collect();
                let ci = bootstrap_mean(&x, boot).unwrap();
                expanded += usize::from(ci.low < 0.0 && 0.0 < ci.high);
                // The plain interval from the same draws.
                let sorted = sorted(&x);
                let mut draws = SplitMix64(seed_of(&sorted));
                let mut means: Vec<f64> = (0..boot.resamples)
                    .map(|_| (0..n).map(|_| sorted[draws.below(n)]).sum::<f64>() / n as f64)
                    .collect();
                means.sort_by(f64::total_cmp);
                let (low, high) = (
                    quantile_sorted(&means, 0.025),
                    quantile_sorted(&means, 0.975),
                );
                plain += usize::from(low < 0.0 && 0.0 < high);
            }
            let (expanded, plain) = (
                expanded as f64 / trials as f64,
                plain as f64 / trials as f64,
            );
            assert!(
                expanded >= least && expanded <= 0.97,
                "n = {n}: the expanded interval covered {expanded}"
            );
            assert!(
                plain < expanded - 0.02,
                "n = {n}: the plain percentile interval covered {plain}, the expanded {expanded}"
            );
        }
    }

    #[test]
    fn captions_name_the_level_and_resamples() {
        assert_eq!(percent(0.95), "95%");
        assert_eq!(percent(0.999), "99.9%");
        assert_eq!(
            Bootstrap::default().describe(),
            "95% bootstrap confidence interval of the mean (expanded percentile method, 10,000 \
             resamples, seeded by the values)"
        );
    }
}
