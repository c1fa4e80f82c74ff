//! What a stage's `matrix`, `include` and `exclude` expand to.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use crate::{Matrix, Value};

/// One combination of matrix values, keyed by parameter name.
pub(crate) type Combination = BTreeMap<String, Value>;

impl Matrix {
    /// Every combination of the stage's sweep, following GitHub Actions' matrix rules:
    ///
    /// 1. The cartesian product of the axes, in file order, the last axis varying fastest
    ///    (`a: [1, 2]`, `b: [x, y]` gives `{1,x} {1,y} {2,x} {2,y}`).
    /// 2. Minus every combination that matches *all* the key/values of some `exclude` entry.
    /// 3. Then each `include` entry, in order: if its values for axis keys agree with one or
    ///    more combinations of the product (it sets no axis key to a different value; an entry
    ///    with no axis keys agrees with all of them), its other keys are added to each of those
    ///    combinations. Original axis values are never overwritten, but a key added by an
    ///    earlier `include` may be. An entry that agrees with no combination of the product is
    ///    appended as a combination of its own; later entries never merge into it.
    /// 4. No axes and no `include`: one empty combination (the stage runs once).
    /// 5. With a `search:`, every sample is crossed with every combination of the grid above,
    ///    sample by sample (sample 0 with each grid combination, then sample 1, …), so raising
    ///    `n` only appends combinations.
    ///
    /// The parameters of one instance are the stage's [`Stage::params`](crate::Stage::params)
    /// overlaid with its combination; a combination's keys win.
    ///
    /// The cost is about linear in the combinations and entries: each `include` or `exclude`
    /// entry meets only the combinations that have its axis values, found through an index of
    /// the combinations by those values (a sweep written as one `include` entry per value took
    /// seconds at 10,000 values when every entry met every combination, #21).
    pub fn expand(&self) -> Vec<BTreeMap<String, Value>> {
        let grid = self.expansion(true).0;
        let Some(search) = &self.search else {
            return grid;
        };
        let mut all = Vec::with_capacity(search.samples.len() * grid.len());
        for sample in &search.samples {
            for combination in &grid {
                let mut c = combination.clone();
                for ((key, _), value) in search.params.iter().zip(sample) {
                    c.insert(key.clone(), value.clone());
                }
                all.push(c);
            }
        }
        all
    }

    /// The combinations of [`Matrix::expand`], read one at a time: a plain product of axes is
    /// never built (a sweep of 10,000 values made 10,000 maps only to copy each into an
    /// instance's params, #21); with `include` or `exclude` it is expanded once.
    pub fn combinations(&self) -> Combinations<'_> {
        let (expanded, grid) = if self.include.is_empty() && self.exclude.is_empty() {
            let grid = if self.axes.is_empty() {
                1
            } else {
                self.axes.iter().map(|(_, values)| values.len()).product()
            };
            (None, grid)
        } else {
            let expanded = self.expansion(true).0;
            let grid = expanded.len();
            (Some(expanded), grid)
        };
        let samples = self.search.as_ref().map_or(1, |s| s.samples.len());
        Combinations {
            axes: &self.axes,
            search: self.search.as_ref(),
            expanded,
            grid,
            len: grid * samples,
        }
    }

    /// The combinations of [`Matrix::expand`] (merged only when `merge`), and the indices of
    /// the `include` entries appended as combinations of their own.
    fn expansion(&self, merge: bool) -> (Vec<Combination>, Vec<usize>) {
        if self.axes.is_empty() && self.include.is_empty() {
            return (vec![Combination::new()], Vec::new());
        }
        let mut combinations = self.product();
        self.remove_excluded(&mut combinations);
        let product = combinations.len();
        // Combinations by their values on a set of axes, one index per set some entry uses.
        // Merging never changes an axis value, so an index stays right while entries merge.
        let mut indexes: HashMap<Vec<usize>, HashMap<u64, Vec<usize>>> = HashMap::new();
        let mut appended = Vec::new();
        for (i, entry) in self.include.iter().enumerate() {
            let axes = self.axis_positions(entry);
            let agreeing: Vec<usize> = if axes.is_empty() {
                (0..product).collect()
            } else {
                let index = indexes.entry(axes).or_insert_with_key(|axes| {
                    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
                    for (c, combination) in combinations[..product].iter().enumerate() {
                        let values = axes.iter().map(|&a| &combination[&self.axes[a].0]);
                        index.entry(hash_values(values)).or_default().push(c);
                    }
                    index
                });
                let values = entry
                    .iter()
                    .filter(|(k, _)| self.is_axis(k))
                    .map(|(_, v)| v);
                index
                    .get(&hash_values(values))
                    .into_iter()
                    .flatten()
                    .copied()
                    // Equal hashes are candidates; agreement is decided on the values.
                    .filter(|&c| self.agrees(&combinations[c], entry))
                    .collect()
            };
            if agreeing.is_empty() {
                appended.push(i);
            } else if merge {
                for c in agreeing {
                    for (key, value) in entry {
                        if !self.is_axis(key) {
                            combinations[c].insert(key.clone(), value.clone());
                        }
                    }
                }
            }
        }
        if merge {
            combinations.extend(appended.iter().map(|&i| self.include[i].clone()));
        }
        (combinations, appended)
    }

    /// Removes every combination that matches an `exclude` entry, looking each up among the
    /// entries with the same keys rather than testing every entry.
    fn remove_excluded(&self, combinations: &mut Vec<Combination>) {
        if self.exclude.is_empty() {
            return;
        }
        let mut groups: BTreeMap<Vec<&str>, HashMap<u64, Vec<&Combination>>> = BTreeMap::new();
        for entry in &self.exclude {
            groups
                .entry(entry.keys().map(String::as_str).collect())
                .or_default()
                .entry(hash_values(entry.values()))
                .or_default()
                .push(entry);
        }
        combinations.retain(|c| {
            !groups.iter().any(|(keys, entries)| {
                let Some(values) = keys.iter().map(|k| c.get(*k)).collect::<Option<Vec<_>>>()
                else {
                    return false;
                };
                entries
                    .get(&hash_values(values))
                    .is_some_and(|es| es.iter().any(|e| matches(c, e)))
            })
        });
    }

    /// The positions in `axes` of the axis keys `entry` sets, in the entry's (sorted) order.
    fn axis_positions(&self, entry: &Combination) -> Vec<usize> {
        entry
            .keys()
            .filter_map(|k| self.axes.iter().position(|(a, _)| a == k))
            .collect()
    }

    /// True when the stage has no sweep of its own: no axes, `include`, `exclude` or `search`.
    pub fn is_empty(&self) -> bool {
        self.axes.is_empty()
            && self.include.is_empty()
            && self.exclude.is_empty()
            && self.search.is_none()
    }

    /// The names of the axes, in file order.
    pub fn axis_names(&self) -> impl Iterator<Item = &str> {
        self.axes.iter().map(|(k, _)| k.as_str())
    }

    /// The order an instance's labels take: the sampled params (in the order `search.params`
    /// lists them), then the axes in file order; `include` keys follow, by name.
    pub fn label_order(&self) -> Vec<&str> {
        let sampled = self.search.iter().flat_map(|s| &s.params);
        sampled
            .map(|(k, _)| k.as_str())
            .chain(self.axis_names())
            .collect()
    }

    /// A grid axis (`matrix:`), not a sampled param.
    pub fn is_axis(&self, key: &str) -> bool {
        self.axes.iter().any(|(k, _)| k == key)
    }

    /// Whether every combination sets `key`: a grid axis with no `include` entries (which may
    /// append combinations without it), or a sampled param.
    pub fn always_sets(&self, key: &str) -> bool {
        (self.is_axis(key) && self.include.is_empty())
            || self.search.as_ref().is_some_and(|s| s.samples_param(key))
    }

    /// Indices of the `include` entries that [`Matrix::expand`] appends as combinations of
    /// their own (they agree with no combination of the product that survived `exclude`).
    pub(crate) fn appended_includes(&self) -> Vec<usize> {
        if self.include.is_empty() {
            return Vec::new();
        }
        self.expansion(false).1
    }

    /// The cartesian product of the axes; empty when there are none.
    fn product(&self) -> Vec<Combination> {
        if self.axes.is_empty() {
            return Vec::new();
        }
        let mut combinations = vec![Combination::new()];
        for (key, values) in &self.axes {
            combinations = combinations
                .iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.insert(key.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        combinations
    }

    /// An include entry agrees with a combination when every axis key it sets has the same value.
    fn agrees(&self, combination: &Combination, entry: &Combination) -> bool {
        #[cfg(test)]
        tests::count_comparison();
        entry
            .iter()
            .filter(|(k, _)| self.is_axis(k))
            .all(|(k, v)| combination.get(k) == Some(v))
    }
}

/// The combinations of a matrix ([`Matrix::combinations`]), in the order of [`Matrix::expand`].
#[derive(Debug)]
pub struct Combinations<'m> {
    axes: &'m [(String, Vec<Value>)],
    search: Option<&'m crate::Search>,
    /// The grid (without the samples); `None`: the cartesian product of `axes`, read by index.
    expanded: Option<Vec<Combination>>,
    /// Combinations of the grid.
    grid: usize,
    len: usize,
}

impl Combinations<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Combination `i` (below [`Combinations::len`]) into `out` (cleared first): its keys and
    /// values, sorted by key as a [`Matrix::expand`] map iterates.
    pub fn get<'s>(&'s self, i: usize, out: &mut Vec<(&'s str, &'s Value)>) {
        out.clear();
        // Sample by sample, the grid within each.
        let (sample, i) = (i / self.grid, i % self.grid);
        match &self.expanded {
            Some(all) => out.extend(all[i].iter().map(|(k, v)| (k.as_str(), v))),
            None => {
                // The last axis varies fastest.
                let mut rest = i;
                for (key, values) in self.axes.iter().rev() {
                    out.push((key.as_str(), &values[rest % values.len()]));
                    rest /= values.len();
                }
            }
        }
        if let Some(search) = self.search {
            let values = &search.samples[sample];
            out.extend(
                search
                    .params
                    .iter()
                    .zip(values)
                    .map(|((k, _), v)| (k.as_str(), v)),
            );
        }
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
}

/// A combination matches an exclude entry when it has every key/value of the entry.
fn matches(combination: &Combination, entry: &Combination) -> bool {
    #[cfg(test)]
    tests::count_comparison();
    entry.iter().all(|(k, v)| combination.get(k) == Some(v))
}

/// A hash of a sequence of values that equal values share (`Value` has no `Hash`): only a
/// bucket to look in, never a verdict, so a collision costs a comparison, not a wrong merge.
fn hash_values<'v>(values: impl IntoIterator<Item = &'v Value>) -> u64 {
    let mut hasher = DefaultHasher::new();
    for value in values {
        hash_value(value, &mut hasher);
    }
    hasher.finish()
}

fn hash_value(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => (1u8, b).hash(hasher),
        Value::Number(n) => {
            2u8.hash(hasher);
            if let Some(u) = n.as_u64() {
                (0u8, u).hash(hasher);
            } else if let Some(i) = n.as_i64() {
                (1u8, i).hash(hasher);
            } else {
                // `0.0 == -0.0`: they must land in one bucket.
                let f = n.as_f64().unwrap_or(0.0);
                (2u8, if f == 0.0 { 0 } else { f.to_bits() }).hash(hasher);
            }
        }
        Value::String(s) => (3u8, s).hash(hasher),
        Value::Array(items) => {
            (4u8, items.len()).hash(hasher);
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            // Summed, so the order a map keeps its keys in does not matter.
            let sum = map.iter().fold(0u64, |sum, (k, v)| {
                let mut h = DefaultHasher::new();
                k.hash(&mut h);
                hash_value(v, &mut h);
                sum.wrapping_add(h.finish())
            });
            (5u8, map.len(), sum).hash(hasher);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::Cell;

    thread_local! {
        /// Comparisons of an entry with a combination on this thread, to show the merge is not
        /// every entry against every combination.
        static COMPARISONS: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn count_comparison() {
        COMPARISONS.with(|c| c.set(c.get() + 1));
    }

    fn comparisons_in(f: impl FnOnce()) -> usize {
        COMPARISONS.with(|c| c.set(0));
        f();
        COMPARISONS.with(Cell::get)
    }

    /// `combinations` reads the combinations `expand` builds, in its order.
    fn assert_combinations_are_the_expansion(m: &Matrix) {
        let all = m.combinations();
        let expanded = m.expand();
        assert_eq!(all.len(), expanded.len(), "{m:?}");
        let mut got = Vec::new();
        for (i, want) in expanded.iter().enumerate() {
            all.get(i, &mut got);
            let want: Vec<(&str, &Value)> = want.iter().map(|(k, v)| (k.as_str(), v)).collect();
            assert_eq!(got, want, "combination {i} of {m:?}");
        }
    }

    #[test]
    fn combinations_read_the_expansion_without_building_a_product() {
        let cases = [
            Matrix::default(),
            Matrix {
                axes: axes(&[
                    ("b", json!([1, 2, 3])),
                    ("a", json!(["x", "y"])),
                    ("c", json!([true])),
                ]),
                ..Default::default()
            },
            Matrix {
                axes: axes(&[("a", json!([1, 1, 2]))]),
                ..Default::default()
            },
            Matrix {
                axes: axes(&[("a", json!([1, 2])), ("b", json!([]))]),
                ..Default::default()
            },
            Matrix {
                axes: axes(&[("a", json!([1, 2])), ("b", json!([3, 4]))]),
                include: vec![combo(json!({"a": 1, "z": 0})), combo(json!({"a": 9}))],
                exclude: vec![combo(json!({"a": 2, "b": 3}))],
                search: None,
            },
        ];
        for m in &cases {
            assert_combinations_are_the_expansion(m);
        }
    }

    fn combo(value: Value) -> Combination {
        serde_json::from_value(value).unwrap()
    }

    fn axes(spec: &[(&str, Value)]) -> Vec<(String, Vec<Value>)> {
        spec.iter()
            .map(|(k, v)| (k.to_string(), v.as_array().unwrap().clone()))
            .collect()
    }

    #[test]
    fn no_axes_no_include_is_one_empty_combination() {
        let m = Matrix::default();
        assert!(m.is_empty());
        assert_eq!(m.expand(), vec![Combination::new()]);
    }

    #[test]
    fn product_in_file_order_last_axis_fastest() {
        let m = Matrix {
            axes: axes(&[("b", json!([1, 2])), ("a", json!(["x", "y", "z"]))]),
            ..Matrix::default()
        };
        assert!(!m.is_empty());
        let got = m.expand();
        let want: Vec<Combination> = [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
            .iter()
            .map(|(b, a)| combo(json!({"b": b, "a": a})))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn exclude_removes_every_combination_matching_all_its_keys() {
        let m = Matrix {
            axes: axes(&[
                ("w", json!(["s", "u"])),
                ("n", json!([1, 2, 4])),
                ("seed", json!([0, 1])),
            ]),
            exclude: vec![
                combo(json!({"w": "u", "n": 1})),
                combo(json!({"n": 4, "seed": 1})),
            ],
            ..Matrix::default()
        };
        let got = m.expand();
        assert_eq!(got.len(), 12 - 2 - 2);
        assert!(!got.contains(&combo(json!({"w": "u", "n": 1, "seed": 0}))));
        assert!(!got.contains(&combo(json!({"w": "s", "n": 4, "seed": 1}))));
        assert!(got.contains(&combo(json!({"w": "s", "n": 1, "seed": 1}))));
    }

    /// The example from GitHub's documentation of `jobs.<id>.strategy.matrix.include`, worked
    /// by hand there.
    #[test]
    fn include_follows_github_actions() {
        let m = Matrix {
            axes: axes(&[
                ("fruit", json!(["apple", "pear"])),
                ("animal", json!(["cat", "dog"])),
            ]),
            include: vec![
                combo(json!({"color": "green"})),
                combo(json!({"color": "pink", "animal": "cat"})),
                combo(json!({"fruit": "apple", "shape": "circle"})),
                combo(json!({"fruit": "banana"})),
                combo(json!({"fruit": "banana", "animal": "cat"})),
            ],
            exclude: vec![],
            search: None,
        };
        assert_eq!(
            m.expand(),
            vec![
                combo(
                    json!({"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"})
                ),
                combo(
                    json!({"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"})
                ),
                combo(json!({"fruit": "pear", "animal": "cat", "color": "pink"})),
                combo(json!({"fruit": "pear", "animal": "dog", "color": "green"})),
                combo(json!({"fruit": "banana"})),
                combo(json!({"fruit": "banana", "animal": "cat"})),
            ]
        );
        assert_eq!(m.appended_includes(), vec![3, 4]);
    }

    #[test]
    fn include_can_bring_back_an_excluded_combination() {
        let m = Matrix {
            axes: axes(&[("w", json!(["s", "u"])), ("n", json!([1, 2]))]),
            exclude: vec![combo(json!({"w": "u"}))],
            include: vec![combo(json!({"w": "u", "n": 2, "lr": 0.5}))],
            search: None,
        };
        assert_eq!(
            m.expand(),
            vec![
                combo(json!({"w": "s", "n": 1})),
                combo(json!({"w": "s", "n": 2})),
                combo(json!({"w": "u", "n": 2, "lr": 0.5})),
            ]
        );
    }

    #[test]
    fn include_without_axes_lists_the_combinations() {
        let m = Matrix {
            include: vec![
                combo(json!({"lr": 0.1, "steps": 2})),
                combo(json!({"lr": 0.2})),
            ],
            ..Matrix::default()
        };
        assert_eq!(
            m.expand(),
            vec![
                combo(json!({"lr": 0.1, "steps": 2})),
                combo(json!({"lr": 0.2}))
            ]
        );
        assert_eq!(m.appended_includes(), vec![0, 1]);
    }

    /// The rules of [`Matrix::expand`] written the plain way: every entry against every
    /// combination.
    fn expand_plainly(m: &Matrix) -> (Vec<Combination>, Vec<usize>) {
        if m.axes.is_empty() && m.include.is_empty() {
            return (vec![Combination::new()], Vec::new());
        }
        let mut combinations = m.product();
        combinations.retain(|c| !m.exclude.iter().any(|e| matches(c, e)));
        let mut appended = Vec::new();
        for (i, entry) in m.include.iter().enumerate() {
            let mut agreed = false;
            for combination in &mut combinations {
                if m.agrees(combination, entry) {
                    agreed = true;
                    for (key, value) in entry {
                        if !m.is_axis(key) {
                            combination.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
            if !agreed {
                appended.push(i);
            }
        }
        combinations.extend(appended.iter().map(|&i| m.include[i].clone()));
        (combinations, appended)
    }

    /// xorshift64*: reproducible random small matrices without a dependency.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    #[test]
    fn the_indexed_expansion_equals_the_plain_one_on_random_matrices() {
        // Values that are equal across representations (0.0 and -0.0), unequal though close
        // (1 and 1.0), and nested.
        let pool = [
            json!(0),
            json!(1),
            json!(2),
            json!(1.0),
            json!(0.0),
            json!(-0.0),
            json!("a"),
            json!("b"),
            json!([1, 2]),
            json!({"k": 1, "j": [true]}),
            json!(null),
        ];
        let names = ["a", "b", "c", "x", "y"];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..4000 {
            let n_axes = rng.below(4);
            let axes: Vec<(String, Vec<Value>)> = (0..n_axes)
                .map(|a| {
                    let values = (0..1 + rng.below(4))
                        .map(|_| pool[rng.below(pool.len())].clone())
                        .collect();
                    (names[a].to_owned(), values)
                })
                .collect();
            let entry = |rng: &mut Rng, axes_only: bool| -> Combination {
                let keys = if axes_only {
                    n_axes.max(1)
                } else {
                    names.len()
                };
                (0..1 + rng.below(3))
                    .map(|_| {
                        (
                            names[rng.below(keys)].to_owned(),
                            pool[rng.below(pool.len())].clone(),
                        )
                    })
                    .collect()
            };
            let include: Vec<Combination> =
                (0..rng.below(6)).map(|_| entry(&mut rng, false)).collect();
            let exclude: Vec<Combination> =
                (0..rng.below(4)).map(|_| entry(&mut rng, true)).collect();
            let m = Matrix {
                axes,
                include,
                exclude,
                search: None,
            };
            let (plain, appended) = expand_plainly(&m);
            assert_eq!(m.expand(), plain, "case {case}: {m:?}");
            assert_eq!(m.appended_includes(), appended, "case {case}: {m:?}");
        }
    }

    /// One include entry per value of a 3,000-value axis (#21: 3.9 s to plan at 10,000 values):
    /// each entry meets the one combination it agrees with, where the plain merge compared every
    /// entry with every combination, 9 million pairs.
    #[test]
    fn one_include_per_axis_value_merges_each_into_its_combination() {
        let n = 3000;
        let m = Matrix {
            axes: vec![("v".into(), (0..n).map(|i| json!(i)).collect())],
            include: (0..n)
                .map(|i| combo(json!({"v": i, "half": i / 2})))
                .chain([combo(json!({"v": -1}))])
                .collect(),
            exclude: (0..n)
                .step_by(1000)
                .map(|i| combo(json!({"v": i + 7})))
                .collect(),
            search: None,
        };
        let mut got = Vec::new();
        let comparisons = comparisons_in(|| got = m.expand());
        assert!(
            comparisons <= 2 * n,
            "{comparisons} comparisons for {n} entries"
        );
        // The product less `v: 7, 1007, 2007`, then the entries that agree with none: those
        // three and `v: -1`.
        assert_eq!(got.len(), n + 1);
        assert_eq!(got[0], combo(json!({"v": 0, "half": 0})));
        assert_eq!(got[n - 4], combo(json!({"v": n - 1, "half": (n - 1) / 2})));
        assert_eq!(got[n - 3], combo(json!({"v": 7, "half": 3})));
        assert_eq!(got[n], combo(json!({"v": -1})));
        assert_eq!(m.appended_includes(), vec![7, 1007, 2007, n]);
        assert_eq!((got, m.appended_includes()), expand_plainly(&m));
    }

    #[test]
    fn everything_excluded_is_nothing() {
        let m = Matrix {
            axes: axes(&[("n", json!([1, 2]))]),
            exclude: vec![combo(json!({"n": 1})), combo(json!({"n": 2}))],
            ..Matrix::default()
        };
        assert!(m.expand().is_empty());
    }
}
