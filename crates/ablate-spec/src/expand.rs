//! What a stage's `matrix`, `include` and `exclude` expand to.

use std::collections::BTreeMap;

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
    ///
    /// The parameters of one instance are the stage's [`Stage::params`](crate::Stage::params)
    /// overlaid with its combination; a combination's keys win.
    pub fn expand(&self) -> Vec<BTreeMap<String, Value>> {
        if self.axes.is_empty() && self.include.is_empty() {
            return vec![Combination::new()];
        }
        let mut combinations = self.product();
        combinations.retain(|c| !self.exclude.iter().any(|e| matches(c, e)));
        let mut appended = Vec::new();
        for entry in &self.include {
            let mut agreed = false;
            for combination in &mut combinations {
                if self.agrees(combination, entry) {
                    agreed = true;
                    for (key, value) in entry {
                        if !self.is_axis(key) {
                            combination.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
            if !agreed {
                appended.push(entry.clone());
            }
        }
        combinations.extend(appended);
        combinations
    }

    /// True when the stage has no sweep of its own: no axes, `include` or `exclude`.
    pub fn is_empty(&self) -> bool {
        self.axes.is_empty() && self.include.is_empty() && self.exclude.is_empty()
    }

    /// The names of the axes, in file order.
    pub fn axis_names(&self) -> impl Iterator<Item = &str> {
        self.axes.iter().map(|(k, _)| k.as_str())
    }

    pub fn is_axis(&self, key: &str) -> bool {
        self.axes.iter().any(|(k, _)| k == key)
    }

    /// Indices of the `include` entries that [`Matrix::expand`] appends as combinations of
    /// their own (they agree with no combination of the product that survived `exclude`).
    pub(crate) fn appended_includes(&self) -> Vec<usize> {
        let mut product = self.product();
        product.retain(|c| !self.exclude.iter().any(|e| matches(c, e)));
        (0..self.include.len())
            .filter(|&i| !product.iter().any(|c| self.agrees(c, &self.include[i])))
            .collect()
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
        entry
            .iter()
            .filter(|(k, _)| self.is_axis(k))
            .all(|(k, v)| combination.get(k) == Some(v))
    }
}

/// A combination matches an exclude entry when it has every key/value of the entry.
fn matches(combination: &Combination, entry: &Combination) -> bool {
    entry.iter().all(|(k, v)| combination.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
