//! Small text helpers every crate's messages share, kept here because `ablate-spec` is the
//! crate all the others that write messages already depend on: one spelling of a list of
//! names (`` `a`, `b`, `c` ``), however many crates print one.

use std::fmt::Display;

/// `` `a`, `b`, `c` ``: each item in backticks, separated by commas; `none` for no items.
pub fn backticked<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|item| format!("`{item}`")).collect();
    if items.is_empty() {
        return "none".to_owned();
    }
    items.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backticked_quotes_each_item_and_says_none_for_an_empty_list() {
        assert_eq!(backticked(["a", "b c", "d"]), "`a`, `b c`, `d`");
        assert_eq!(backticked(&["one".to_owned()]), "`one`");
        assert_eq!(backticked(Vec::<&str>::new()), "none");
    }
}
