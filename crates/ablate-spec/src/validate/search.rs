//! A stage's `search:` (issue 24): how many samples, the seed, and a distribution per sampled
//! param, each checked against the op's param type; then the samples drawn and normalised as
//! matrix values are, so a sampled `lr` hashes like a listed one.

use super::*;
use crate::search::distinct;
use crate::{Distribution, MAX_SAMPLES, Search};

const SEARCH_KEYS: &[&str] = &["n", "seed", "params"];

/// The forms a distribution is written in, for messages.
const FORMS: &str = "a map with one distribution: `uniform: [low, high]`, `loguniform: [low, high]`, \
                     `int: [low, high]` or `choice: [value, …]`";

impl Validator<'_, '_> {
    /// The stage's `search`, drawn; `None` when anything in it is wrong. The names it samples
    /// are returned either way (they are not missing params, nor free to set in `params`).
    pub(super) fn search(
        &mut self,
        stage: &str,
        schema: &OpSchema,
        key: &Key,
        node: &Node,
        axis_keys: &BTreeSet<String>,
    ) -> (Option<Search>, BTreeSet<String>) {
        let mut sampled = BTreeSet::new();
        let context = format!("`search` of stage `{stage}`");
        let Some(node) = interpolate(node, &self.vars, self.errors) else {
            return (None, sampled);
        };
        let Some(entries) = node.as_map() else {
            self.push(type_error(
                &node,
                &context,
                "a map with `n`, `seed` and `params`",
            ));
            return (None, sampled);
        };
        let before = self.errors.len();
        let fields = self.fields(entries, SEARCH_KEYS, &context);
        let n = match fields.get("n") {
            Some((_, node)) => self.search_n(stage, node),
            None if fields.attempted("n") => None,
            None => {
                self.push(
                    key.origin
                        .error(format!("{context} has no `n`"))
                        .label("missing `n`")
                        .help("add `n: N`, the number of samples to draw"),
                );
                None
            }
        };
        let seed = match fields.get("seed") {
            Some((_, node)) => match node.kind {
                Kind::Int(seed) if seed >= 0 => Some(seed as u64),
                _ => {
                    self.push(type_error(
                        node,
                        &format!("`seed` of {context}"),
                        "an integer ≥ 0",
                    ));
                    None
                }
            },
            None => Some(0),
        };
        let mut params = Vec::new();
        match fields.get("params") {
            None if fields.attempted("params") => {}
            None => self.push(
                key.origin
                    .error(format!("{context} has no `params`"))
                    .label("missing `params`")
                    .help("name the params to sample and their distributions: `params: { lr: { loguniform: [1.0e-4, 1.0e-1] } }`"),
            ),
            Some((params_key, node)) => match node.as_map() {
                None => self.push(type_error(
                    node,
                    &format!("`params` of {context}"),
                    "a map of parameter → distribution",
                )),
                Some([]) => self.push(
                    params_key
                        .origin
                        .error(format!("{context} samples no params"))
                        .label("empty")
                        .help("name at least one param and its distribution: `lr: { loguniform: [1.0e-4, 1.0e-1] }`"),
                ),
                Some(entries) => {
                    for (param, dist) in entries {
                        sampled.insert(param.name.clone());
                        if axis_keys.contains(&param.name) {
                            self.push(
                                param
                                    .origin
                                    .error(format!(
                                        "parameter `{}` of stage `{stage}` is both a matrix axis and sampled by `search`",
                                        shorten_name(&param.name)
                                    ))
                                    .label("also a matrix axis")
                                    .help("list its values under `matrix:` or sample it under `search.params:`; remove one"),
                            );
                            continue;
                        }
                        let Some(ty) = Self::param_type(schema, &param.name) else {
                            self.unknown_param(stage, schema, param);
                            continue;
                        };
                        if let Some(d) = self.distribution(stage, schema, param, dist, ty) {
                            params.push((param.name.clone(), d, dist.origin.clone(), ty));
                        }
                    }
                }
            },
        }
        let (Some(n), Some(seed), true) = (n, seed, self.errors.len() == before) else {
            return (None, sampled);
        };
        // Draw, then normalise every value as a matrix value is (an `int` sample of a float
        // param becomes a float) and let the op check it.
        let space: Vec<(String, Distribution)> = params
            .iter()
            .map(|(k, d, _, _)| (k.clone(), d.clone()))
            .collect();
        let mut samples: Vec<Vec<Value>> = (0..n).map(|i| Search::draw(seed, i, &space)).collect();
        for (p, (name, _, origin, ty)) in params.iter().enumerate() {
            for (i, sample) in samples.iter_mut().enumerate() {
                let raw = Node::from_value(&sample[p], origin);
                let checked = check_param(schema.name, name, &raw, ty).and_then(|value| match self
                    .catalog
                    .check_value(schema.name, name, &value)
                {
                    Ok(()) => Ok(value),
                    Err(why) => Err(origin.error(format!(
                        "invalid `{}` for op `{}`: {why}",
                        shorten_name(name),
                        schema.name
                    ))),
                });
                match checked {
                    Ok(value) => sample[p] = value,
                    Err(d) => {
                        // Once per param: the first sample that does not fit says enough.
                        let message = format!(
                            "sample {i} of search param `{}` of stage `{stage}` does not fit: {}",
                            shorten_name(name),
                            d.message
                        );
                        self.push(
                            origin
                                .error(message)
                                .label("this distribution")
                                .help("narrow the distribution to values the parameter takes"),
                        );
                        break;
                    }
                }
            }
        }
        if self.errors.len() != before {
            return (None, sampled);
        }
        let search = Search {
            n,
            seed,
            params: space,
            samples: distinct(samples),
        };
        (Some(search), sampled)
    }

    fn search_n(&mut self, stage: &str, node: &Node) -> Option<u64> {
        match node.kind {
            Kind::Int(n) if n >= 1 && n as u64 <= MAX_SAMPLES => Some(n as u64),
            Kind::Int(n) if n < 1 => {
                self.push(
                    node.origin
                        .error(format!(
                            "`n` of `search` of stage `{stage}` must be at least 1, found `{n}`"
                        ))
                        .label("no samples")
                        .help("`n` is the number of samples to draw"),
                );
                None
            }
            Kind::Int(n) => {
                self.push(
                    node.origin
                        .error(format!(
                            "`n` of `search` of stage `{stage}` is `{n}`, over the limit of {MAX_SAMPLES}"
                        ))
                        .label("too many samples")
                        .help("every sample is an instance of the plan: split the search into stages with their own seeds"),
                );
                None
            }
            _ => {
                self.push(type_error(
                    node,
                    &format!("`n` of `search` of stage `{stage}`"),
                    "an integer ≥ 1",
                ));
                None
            }
        }
    }

    /// One param's distribution, its bounds or values checked against the param's type.
    fn distribution(
        &mut self,
        stage: &str,
        schema: &OpSchema,
        param: &Key,
        node: &Node,
        ty: &ParamType,
    ) -> Option<Distribution> {
        let name = shorten_name(&param.name);
        let subject = format!("search param `{name}` of stage `{stage}`");
        let entries = match node.as_map() {
            Some(entries) if entries.len() == 1 => entries,
            Some([]) => {
                self.push(
                    node.origin
                        .error(format!("{subject} has no distribution"))
                        .label("empty")
                        .help(format!("write {FORMS}")),
                );
                return None;
            }
            Some(entries) => {
                let names: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
                self.push(
                    entries[1]
                        .0
                        .origin
                        .error(format!(
                            "{subject} has {} distributions ({}), not one",
                            names.len(),
                            list(&names)
                        ))
                        .label("a second distribution")
                        .help("a param is sampled from one distribution: keep one"),
                );
                return None;
            }
            None => {
                let d = node
                    .origin
                    .error(format!(
                        "{subject} expects a distribution ({}), found {}",
                        list(Distribution::NAMES),
                        node.describe()
                    ))
                    .label("expected a distribution");
                let d = if matches!(node.kind, Kind::Seq(_)) {
                    d.help(format!(
                        "to choose among values, write `{name}: {{ choice: [...] }}`; to run each of them, move `{name}` under `matrix:`"
                    ))
                } else {
                    d.help(format!(
                        "write {FORMS}; to fix `{name}` to one value, set it under `params:` instead"
                    ))
                };
                self.push(d);
                return None;
            }
        };
        let (kind, args) = &entries[0];
        let which = kind.name.as_str();
        let of = format!("`{which}` of {subject}");
        match which {
            "uniform" | "loguniform" => {
                if matches!(ty, ParamType::Int { .. }) {
                    self.push(
                        kind.origin
                            .error(format!(
                                "{subject} is an integer parameter of op `{}`, but `{which}` samples floats",
                                schema.name
                            ))
                            .label("samples floats")
                            .help("sample integers with `int: [low, high]`"),
                    );
                    return None;
                }
                let [low, high] = self.bounds(&of, args)?;
                let (Some(lo), Some(hi)) = (number(low), number(high)) else {
                    for item in [low, high] {
                        if number(item).is_none() {
                            self.push(type_error(item, &format!("a bound of {of}"), "a number"));
                        }
                    }
                    return None;
                };
                let mut ok = self.ordered(&of, args, lo >= hi, low, high);
                if which == "loguniform" && lo <= 0.0 {
                    ok = false;
                    self.push(
                        low.origin
                            .error(format!("{of} needs low > 0, found `{}`", describe_number(low)))
                            .label("not positive")
                            .help("a log scale never reaches 0: start at a small positive value (`1.0e-6`), or use `uniform`"),
                    );
                }
                // The bounds as values of the param (in its range): when they make a range.
                if ok {
                    for item in [low, high] {
                        if let Err(d) = check_param(schema.name, &param.name, item, ty) {
                            ok = false;
                            self.push(d);
                        }
                    }
                }
                ok.then_some(if which == "uniform" {
                    Distribution::Uniform { low: lo, high: hi }
                } else {
                    Distribution::LogUniform { low: lo, high: hi }
                })
            }
            "int" => {
                let [low, high] = self.bounds(&of, args)?;
                let (Kind::Int(lo), Kind::Int(hi)) = (&low.kind, &high.kind) else {
                    for item in [low, high] {
                        if !matches!(item.kind, Kind::Int(_)) {
                            self.push(
                                item.origin
                                    .error(format!(
                                        "a bound of {of} must be an integer, found {}",
                                        item.describe()
                                    ))
                                    .label("not an integer")
                                    .help("`int` samples whole numbers between whole bounds (inclusive): write them without a fraction, or use `uniform`"),
                            );
                        }
                    }
                    return None;
                };
                let mut ok = self.ordered(&of, args, lo >= hi, low, high);
                // The bounds as values of the param (in its range): when they make a range.
                if ok {
                    for item in [low, high] {
                        if let Err(d) = check_param(schema.name, &param.name, item, ty) {
                            ok = false;
                            self.push(d);
                        }
                    }
                }
                ok.then_some(Distribution::Int {
                    low: *lo,
                    high: *hi,
                })
            }
            "choice" => {
                let Kind::Seq(items) = &args.kind else {
                    self.push(type_error(args, &of, "a list of values"));
                    return None;
                };
                if items.is_empty() {
                    self.push(
                        args.origin
                            .error(format!("{of} has no values"))
                            .label("empty list")
                            .help(format!("give `{name}` at least one value to choose from")),
                    );
                    return None;
                }
                let mut values = Vec::with_capacity(items.len());
                let mut seen = std::collections::HashSet::with_capacity(items.len());
                let mut ok = true;
                for item in items {
                    match self.checked_value(schema, &param.name, item, ty) {
                        Some(value) if !seen.insert(value.to_string()) => {
                            ok = false;
                            self.push(
                                item.origin
                                    .error(format!(
                                        "duplicate value `{}` in {of}",
                                        shorten(&value.to_string())
                                    ))
                                    .label("duplicate")
                                    .help(
                                        "each value is chosen as often as the others: list it once",
                                    ),
                            );
                        }
                        Some(value) => values.push(value),
                        None => ok = false,
                    }
                }
                ok.then_some(Distribution::Choice(values))
            }
            other => {
                let known = format!("the distributions are {}", list(Distribution::NAMES));
                let help = match suggest::hint(other, Distribution::NAMES) {
                    Some(hint) => format!("{hint} ({known})"),
                    None => known,
                };
                self.push(
                    kind.origin
                        .error(format!(
                            "unknown distribution `{}` for {subject}",
                            shorten_name(other)
                        ))
                        .label("unknown distribution")
                        .help(help),
                );
                None
            }
        }
    }

    /// The two items of `[low, high]`.
    fn bounds<'n>(&mut self, of: &str, args: &'n Node) -> Option<[&'n Node; 2]> {
        match &args.kind {
            Kind::Seq(items) if items.len() == 2 => Some([&items[0], &items[1]]),
            _ => {
                self.push(type_error(args, of, "a list `[low, high]`"));
                None
            }
        }
    }

    /// Reports `[low, high]` with low ≥ high; whether it is in order.
    fn ordered(&mut self, of: &str, args: &Node, wrong: bool, low: &Node, high: &Node) -> bool {
        if wrong {
            let help = if low.kind == high.kind {
                "to fix the value, set it under `params:` instead"
            } else {
                "write `[low, high]` with low < high"
            };
            self.push(
                args.origin
                    .error(format!(
                        "{of} has low ≥ high (`{}` ≥ `{}`)",
                        describe_number(low),
                        describe_number(high)
                    ))
                    .label("low ≥ high")
                    .help(help),
            );
        }
        !wrong
    }
}

/// A number as written (`0.1`, `16`), for messages.
fn describe_number(node: &Node) -> String {
    match node.kind {
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => crate::node::format_float(f),
        _ => node.describe(),
    }
}
