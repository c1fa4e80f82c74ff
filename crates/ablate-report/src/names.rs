//! What to say when a metric a report asks for is missing from its inputs, shared by
//! `report.table`, `report.claims` and the figures.

use std::collections::BTreeMap;

/// Why `metric` cannot be reported from the inputs that finished, given each one's `(id,
/// names)`, if it cannot: none of them has it (with the nearest name they do have, and what
/// they have), or `every` is asked and some lack it (which). `what` is how the name is spoken
/// of (`the metric`, `the stepped metric`). `None` when no input finished.
pub fn name_problem(
    metric: &str,
    finished: &[(&str, Vec<&str>)],
    every: bool,
    what: &str,
) -> Option<String> {
    let total = finished.len();
    let lacking: Vec<&str> = finished
        .iter()
        .filter(|(_, names)| !names.contains(&metric))
        .map(|(id, _)| *id)
        .collect();
    if total == 0 || lacking.is_empty() || (!every && lacking.len() < total) {
        return None;
    }
    let mut have: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, names) in finished {
        for name in names {
            *have.entry(name).or_default() += 1;
        }
    }
    let listed: Vec<String> = have
        .iter()
        .map(|(name, &n)| {
            if n == total {
                format!("`{name}`")
            } else {
                format!("`{name}` ({n} of {total})")
            }
        })
        .collect();
    let listed = if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    };
    if lacking.len() == total {
        let guess = ablate_spec::did_you_mean(metric, have.keys().copied())
            .map(|m| match have[m] {
                n if n == total => format!("; did you mean `{m}`? (all {total} inputs have it)"),
                n => format!("; did you mean `{m}`? ({n} of {total} inputs have it)"),
            })
            .unwrap_or_default();
        return Some(format!(
            "no input has {what} `{metric}`{guess}; the inputs have: {listed}"
        ));
    }
    const SHOWN: usize = 3;
    let mut which: Vec<String> = lacking
        .iter()
        .take(SHOWN)
        .map(|id| format!("`{id}`"))
        .collect();
    if lacking.len() > SHOWN {
        which.push(format!("and {} more", lacking.len() - SHOWN));
    }
    Some(format!(
        "{} of {total} inputs have no {} `{metric}` ({}); the inputs have: {listed}",
        lacking.len(),
        what.trim_start_matches("the "),
        which.join(", ")
    ))
}
