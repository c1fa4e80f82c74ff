//! A stage's `early_stop:` block (issue 24): successive halving's metric, goal, resource and
//! rungs, each field checked and reported at its place.

use super::*;
use crate::{EarlyStop, Goal};

const EARLY_STOP_KEYS: &[&str] = &["metric", "mode", "resource", "min", "max", "eta", "seeds"];

const HELP: &str = "e.g. `early_stop: { metric: loss, mode: min, resource: epochs, min: 10, \
                    max: 270, eta: 3 }`: every instance computes `min` epochs, then the best \
                    1/eta of the configurations (averaged over `seeds`) go on to `min·eta`, and \
                    so on up to `max`; the others stop there as `pruned` results";

impl Validator<'_, '_> {
    /// `early_stop:` of stage `name`, whose op is `schema`'s.
    pub(super) fn early_stop(
        &mut self,
        name: &str,
        node: &Node,
        schema: Option<&OpSchema>,
    ) -> Option<EarlyStop> {
        let subject = format!("`early_stop` of stage `{name}`");
        let Some(entries) = node.as_map() else {
            self.push(type_error(node, &subject, "a map").help(HELP));
            return None;
        };
        let unit = schema.map(|s| (s.name, self.catalog.budget_unit(s.name)));
        if let Some((op, None)) = unit {
            let able: Vec<&str> = self
                .catalog
                .op_names()
                .into_iter()
                .filter(|op| self.catalog.budget_unit(op).is_some())
                .collect();
            self.push(
                node.origin
                    .error(format!(
                        "{subject}: op `{op}` cannot stop at a budget and resume from a checkpoint"
                    ))
                    .label("not for this op")
                    .help(format!("early stopping works with {}", list(able))),
            );
            return None;
        }
        let fields = self.fields(entries, EARLY_STOP_KEYS, &subject);
        let mut ok = true;
        let required = |v: &mut Self, key: &str| {
            let found = fields.get(key).map(|(_, n)| *n);
            if found.is_none() && !fields.attempted(key) {
                v.push(
                    node.origin
                        .error(format!("{subject} has no `{key}`"))
                        .label(format!("`{key}` missing"))
                        .help(HELP),
                );
            }
            found
        };
        let metric = required(self, "metric")
            .and_then(|n| self.string(n, &format!("`early_stop.metric` of stage `{name}`")))
            .map(str::to_owned);
        let min = required(self, "min").and_then(|n| self.count(n, name, "min", 1));
        let max = required(self, "max").and_then(|n| self.count(n, name, "max", 1));
        let mode = match fields.get("mode") {
            None => Some(Goal::Min),
            Some((_, n)) => match &n.kind {
                Kind::Str(s) if s == "min" => Some(Goal::Min),
                Kind::Str(s) if s == "max" => Some(Goal::Max),
                _ => {
                    self.push(
                        type_error(n, &format!("`early_stop.mode` of stage `{name}`"), "`min` or `max`")
                            .help("`min` when a smaller metric is better (a loss), `max` when a larger one is (an accuracy)"),
                    );
                    None
                }
            },
        };
        let eta = match fields.get("eta") {
            None => Some(3),
            Some((_, n)) => self.count(n, name, "eta", 2),
        };
        let seeds = match fields.get("seeds") {
            None => Some("seed".to_owned()),
            Some((_, n)) => self
                .string(n, &format!("`early_stop.seeds` of stage `{name}`"))
                .map(str::to_owned),
        };
        let resource = match (fields.get("resource"), unit) {
            (None, Some((_, Some(unit)))) => Some(unit.to_owned()),
            (None, _) => None,
            (Some((_, n)), unit) => {
                let written = self.string(n, &format!("`early_stop.resource` of stage `{name}`"));
                match (written, unit) {
                    (Some(w), Some((op, Some(unit)))) if w != unit => {
                        self.push(
                            n.origin
                                .error(format!(
                                    "`early_stop.resource` of stage `{name}`: op `{op}` counts \
                                     its progress in `{unit}`, not `{w}`"
                                ))
                                .label(format!("expected `{unit}`"))
                                .help(format!("write `resource: {unit}` (or leave it out)")),
                        );
                        None
                    }
                    (w, _) => w.map(str::to_owned),
                }
            }
        };
        if let (Some(min), Some(max)) = (min, max)
            && min >= max
        {
            ok = false;
            let at = fields.get("min").map_or(node, |(_, n)| *n);
            self.push(
                at.origin
                    .error(format!(
                        "`early_stop` of stage `{name}`: `min` ({min}) must be below `max` ({max})"
                    ))
                    .label("min ≥ max")
                    .help("`max` is the instances' whole length (their `epochs` or `steps`); `min` the first rung"),
            );
        }
        let (
            Some(metric),
            Some(mode),
            Some(resource),
            Some(min),
            Some(max),
            Some(eta),
            Some(seeds),
        ) = (metric, mode, resource, min, max, eta, seeds)
        else {
            return None;
        };
        ok.then_some(EarlyStop {
            metric,
            mode,
            resource,
            min,
            max,
            eta,
            seeds,
        })
    }

    /// A whole number ≥ `least` for `early_stop.<key>`.
    fn count(&mut self, node: &Node, stage: &str, key: &str, least: i64) -> Option<u64> {
        match node.kind {
            Kind::Int(i) if i >= least => u64::try_from(i).ok(),
            _ => {
                self.push(type_error(
                    node,
                    &format!("`early_stop.{key}` of stage `{stage}`"),
                    &format!("a whole number ≥ {least}"),
                ));
                None
            }
        }
    }
}
