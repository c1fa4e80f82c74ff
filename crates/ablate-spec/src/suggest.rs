//! "Did you mean" hints for misspelt names, the way cargo and clap make them.

/// The candidate closest to `unknown`, if one is close enough to be a plausible typo.
///
/// A candidate equal to `unknown` ignoring case wins outright; otherwise the one with the
/// smallest edit distance (Levenshtein in characters, counting a swap of two adjacent
/// characters as one edit) wins, provided that distance is at most `max(1, len / 3)` where
/// `len` is the length of `unknown`. Ties go to the earlier candidate.
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
    for candidate in candidates {
        if candidate.to_lowercase() == lowercase {
            return Some(candidate);
        }
        let candidate_length = candidate.chars().count();
        if length > LONGEST
            || candidate_length > LONGEST
            || candidate_length.abs_diff(length) > limit
        {
            continue;
        }
        let distance = edit_distance(unknown, candidate);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
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
