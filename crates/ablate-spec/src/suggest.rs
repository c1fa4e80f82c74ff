//! "Did you mean" hints for misspelt names, the way cargo and clap make them.

/// The candidate closest to `unknown`, if one is close enough to be a plausible typo.
///
/// A candidate equal to `unknown` ignoring case wins outright; otherwise the one with the
/// smallest edit distance (Levenshtein in characters, counting a swap of two adjacent
/// characters as one edit) wins, provided that distance is at most `max(1, len / 3)` where
/// `len` is the length of `unknown`. Ties go to the earlier candidate.
///
/// Failing that, a candidate that shares its stem with `unknown` is taken: a singular for a
/// plural, a short form, a word left out (`retry` for `retries`, `desc` for `description`,
/// `cpu_count` for `cpus`, `num_epochs` for `epochs`), which the edit distance counts as too
/// many edits for a short name (see [`same_stem`]).
pub fn did_you_mean<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // The distance costs the product of the lengths: past any name a pipeline may use, only an
    // equal-ignoring-case candidate is looked for (a 1 MB key must not take minutes to report).
    const LONGEST: usize = 2 * crate::MAX_NAME_BYTES;
    let length = unknown.chars().count();
    let limit = (length / 3).max(1);
    let lowercase = unknown.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    // The best stem match: the longest shared stem, then the smallest distance.
    let mut stem: Option<((std::cmp::Reverse<usize>, usize), &'a str)> = None;
    for candidate in candidates {
        let candidate_lowercase = candidate.to_lowercase();
        if candidate_lowercase == lowercase {
            return Some(candidate);
        }
        let candidate_length = candidate.chars().count();
        if length > LONGEST || candidate_length > LONGEST {
            continue;
        }
        let close_in_length = candidate_length.abs_diff(length) <= limit;
        let shared = same_stem(&lowercase, &candidate_lowercase);
        if !close_in_length && shared.is_none() {
            continue;
        }
        let distance = edit_distance(&lowercase, &candidate_lowercase);
        if close_in_length && distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
        if let Some(shared) = shared {
            let rank = (std::cmp::Reverse(shared), distance);
            if stem.is_none_or(|(r, _)| rank < r) {
                stem = Some((rank, candidate));
            }
        }
    }
    best.map(|(_, candidate)| candidate)
        .or(stem.map(|(_, candidate)| candidate))
}

/// How much of a stem `a` and `b` (both lowercase) share, when one is plausibly the other
/// inflected, shortened or with a word more: `None` when they do not.
///
/// - A common prefix of at least 3 characters that leaves at most one character of the
///   shorter name over: `retry`/`retries`, `desc`/`description`, `mem`/`mem_gb`,
///   `cpu_count`/`cpus`.
/// - Or every `_`/`-`-separated word of the shorter name, at least 3 characters in all, is a
///   word of the longer one: `num_epochs`/`epochs`, `size_batch`/`batch_size`.
fn same_stem(a: &str, b: &str) -> Option<usize> {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let shorter = a.len().min(b.len());
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if prefix >= 3 && prefix + 1 >= shorter {
        return Some(prefix);
    }
    let words = |s: &[char]| -> Vec<String> {
        s.split(|c| matches!(c, '_' | '-'))
            .filter(|w| !w.is_empty())
            .map(|w| w.iter().collect())
            .collect()
    };
    let (wa, wb) = (words(&a), words(&b));
    let (few, many) = if wa.len() <= wb.len() {
        (wa, wb)
    } else {
        (wb, wa)
    };
    let letters: usize = few.iter().map(|w| w.chars().count()).sum();
    (letters >= 3 && few.iter().all(|w| many.contains(w))).then_some(letters)
}

/// `did_you_mean` phrased as a hint: "did you mean `stages`?".
pub(crate) fn hint<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    did_you_mean(unknown, candidates)
        .map(|c| format!("did you mean `{}`?", crate::node::shorten_name(c)))
}

/// The edit distance between `a` and `b` in characters: Levenshtein's insertions, deletions
/// and substitutions, plus swapping two adjacent characters as one edit (the optimal string
/// alignment distance), because `widht` for `width` is one slip of the fingers, not two.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows: two back (for transpositions), previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 0..a.len() {
        current[0] = i + 1;
        for j in 0..b.len() {
            let substitution = previous[j] + usize::from(a[i] != b[j]);
            let mut best = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                best = best.min(before[j - 1] + 1);
            }
            current[j + 1] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("héllo", "hello"), 1);
        // Adjacent swaps are one edit.
        assert_eq!(edit_distance("stagse", "stages"), 1);
        assert_eq!(edit_distance("widht", "width"), 1);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("abc", "ca"), 3);
    }

    #[test]
    fn suggests_close_names() {
        let keys = ["name", "description", "vars", "defaults", "stages"];
        assert_eq!(did_you_mean("stagse", keys), Some("stages"));
        assert_eq!(did_you_mean("stage", keys), Some("stages"));
        assert_eq!(did_you_mean("defaluts", keys), Some("defaults"));
        assert_eq!(did_you_mean("nmae", keys), Some("name"));
        assert_eq!(did_you_mean("widht", ["width", "depth"]), Some("width"));
        assert_eq!(
            did_you_mean("trian.flow", ["data.toy2d", "train.flow", "cmd"]),
            Some("train.flow")
        );
    }

    #[test]
    fn rejects_distant_names() {
        let keys = ["name", "description", "vars", "defaults", "stages"];
        assert_eq!(did_you_mean("executor", keys), None);
        assert_eq!(did_you_mean("xy", keys), None);
        assert_eq!(did_you_mean("anything", std::iter::empty()), None);
        // Short names allow one edit, not two.
        assert_eq!(did_you_mean("lr", ["lr2"]), Some("lr2"));
        assert_eq!(did_you_mean("ab", ["cd"]), None);
    }

    /// `retry: 1` listed every stage key (#21): three edits from `retries`, over the limit of
    /// one for a five-letter name.
    #[test]
    fn a_singular_a_short_form_or_a_missing_word_finds_its_name() {
        // The keys the validator knows, so a key added there is tried here too.
        let stage = || crate::validate::STAGE_KEYS.iter().copied();
        assert_eq!(did_you_mean("retry", stage()), Some("retries"));
        assert_eq!(did_you_mean("desc", stage()), Some("description"));
        assert_eq!(did_you_mean("res", stage()), Some("resources"));
        assert_eq!(did_you_mean("time", stage()), Some("timeout"));
        assert_eq!(did_you_mean("dev", stage()), Some("device"));
        let resources = ["cpus", "gpus", "mem_gb"];
        assert_eq!(did_you_mean("mem", resources), Some("mem_gb"));
        assert_eq!(did_you_mean("cpu_count", resources), Some("cpus"));
        assert_eq!(did_you_mean("gpu", resources), Some("gpus"));
        let params = ["epochs", "batch_size", "hidden", "lr"];
        assert_eq!(did_you_mean("num_epochs", params), Some("epochs"));
        assert_eq!(did_you_mean("size_batch", params), Some("batch_size"));
        assert_eq!(did_you_mean("hidden_units", params), Some("hidden"));
        // Metric names too (a report's `metric:`, a claim's): a longer form, a qualified one.
        assert_eq!(did_you_mean("accuracy", ["acc", "loss"]), Some("acc"));
        assert_eq!(did_you_mean("val_loss", ["acc", "loss"]), Some("loss"));
        assert_eq!(did_you_mean("f1_score", ["acc", "loss"]), None);
        // A close spelling beats a shared stem.
        assert_eq!(
            did_you_mean("retrie", ["retry_delay", "retries"]),
            Some("retries")
        );
        // The longer shared stem wins.
        assert_eq!(
            did_you_mean("seeds", ["seed_offset", "seeds_per_run"]),
            Some("seeds_per_run")
        );
        // Two letters in common is not a stem; nor is a word of two letters.
        assert_eq!(did_you_mean("ex", stage()), None);
        assert_eq!(did_you_mean("lr_max", ["lr_decay_steps"]), None);
        assert_eq!(did_you_mean("executor", stage()), None);
    }

    #[test]
    fn case_insensitive_match_wins_even_when_far() {
        assert_eq!(did_you_mean("STAGES", ["stage", "stages"]), Some("stages"));
        assert_eq!(did_you_mean("Op", ["op", "o"]), Some("op"));
    }

    #[test]
    fn huge_names_get_no_suggestion_and_no_quadratic_wait() {
        let long = "s".repeat(1_000_000);
        let near = format!("{long}x");
        let started = std::time::Instant::now();
        assert_eq!(did_you_mean(&long, [near.as_str(), "stages"]), None);
        assert_eq!(
            did_you_mean(&long.to_uppercase(), [long.as_str()]),
            Some(long.as_str())
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let key = format!("{}x", "k".repeat(300));
        assert_eq!(
            hint(&key, [key.as_str()]).map(|h| h.len() < 200),
            Some(true)
        );
    }

    #[test]
    fn ties_go_to_the_first_candidate() {
        assert_eq!(did_you_mean("cat", ["bat", "hat"]), Some("bat"));
        assert_eq!(did_you_mean("cat", ["hat", "bat"]), Some("hat"));
    }
}
