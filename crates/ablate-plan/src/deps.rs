//! Which files a `deps` entry names (#18): a file, every file below a directory, or every file
//! a glob matches — so the code a stage runs is part of its key, file by file.
//!
//! The rules, for an entry written relative to the pipeline's working directory (the file's
//! own directory, or its `workdir:`), or absolute:
//!
//! - An entry naming an existing file (following a symlink) is that file, path as written,
//!   even if its name holds a glob character: keys of plain file deps never change.
//! - An entry naming a directory (`src` or `src/`) stands for every regular file below it,
//!   recursively, each shown as `src/model.py` (`/`-separated, the entry's own prefix kept;
//!   `.` adds none).
//! - Otherwise an entry holding `*`, `?` or `[` is a glob, matched one path component at a
//!   time: `*` any run of characters, `?` one character, `[abc]`, `[a-z]`, `[!a]` (or `[^a]`) a
//!   class; `**` as a whole component is zero or more directories. As in a shell, `*`, `?` and
//!   classes never match a leading `.` (write it: `.github/*.yml`, `src/.*`). The components
//!   before the first wildcard are the pattern's own prefix, kept in every path (an absolute
//!   glob yields absolute paths). Only files match, never directories.
//! - Walks — below a directory, and through `**` — skip hidden files and directories (names
//!   starting with `.`), `__pycache__` directories (Python rewrites them whenever it runs), and
//!   directories holding a `CACHEDIR.TAG` (an ablate cache inside the tree changes with every
//!   run). They do not follow symlinked directories, so a link cycle cannot loop; a symlink to
//!   a file is hashed by its target's content under the link's path. A name that is not UTF-8
//!   cannot be written in a key and is skipped.
//! - Anything else is a plain path: hashing reports it if it cannot be read (but a missing
//!   `lib/`, written as a directory, matches no file).
//!
//! A directory or glob that matches no file is an error, as is one whose walk cannot read a
//! directory; a dangling symlink that matches is kept, so hashing reports it.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::rc::Rc;

/// What a `deps` entry names, before hashing.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expansion {
    /// A plain path, hashed (or reported unreadable) as written.
    Literal,
    /// The files a directory or glob matched: sorted, deduplicated, never empty.
    Matched(Rc<[String]>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ExpandError {
    /// A directory or glob matched no file.
    NoMatch,
    /// A directory on the way could not be listed; the cause, rendered.
    Unreadable(String),
}

/// Expands one `deps` entry against `workdir`.
pub(crate) fn expand(workdir: &Path, entry: &str) -> Result<Expansion, ExpandError> {
    if entry.is_empty() {
        return Ok(Expansion::Literal);
    }
    let full = workdir.join(entry);
    let mut files = match fs::metadata(&full) {
        Ok(m) if m.is_dir() => {
            let mut out = Vec::new();
            walk_dir(&full, dir_prefix(entry), &mut out)?;
            out
        }
        Ok(_) => return Ok(Expansion::Literal),
        // `lib/` means a directory: missing, it matches no file.
        Err(_) if is_glob(entry) || entry.ends_with('/') => glob(workdir, entry)?,
        Err(_) => return Ok(Expansion::Literal),
    };
    if files.is_empty() {
        return Err(ExpandError::NoMatch);
    }
    files.sort();
    files.dedup();
    Ok(Expansion::Matched(files.into()))
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// How paths below a directory entry are shown: `src/` and `src` as `src`, `.` as nothing.
fn dir_prefix(entry: &str) -> &str {
    let trimmed = entry.trim_end_matches('/');
    match trimmed {
        "" => "/",
        "." => "",
        t => t,
    }
}

/// `shown` and `name` joined with one `/`.
fn child(shown: &str, name: &str) -> String {
    if shown.is_empty() {
        name.to_owned()
    } else if shown.ends_with('/') {
        format!("{shown}{name}")
    } else {
        format!("{shown}/{name}")
    }
}

/// The UTF-8-named entries of `dir` with their (unfollowed) types; a missing directory has
/// none.
fn list(dir: &Path) -> Result<Vec<(String, fs::FileType)>, ExpandError> {
    let unreadable = |e: std::io::Error| {
        ExpandError::Unreadable(format!("failed to read directory `{}`: {e}", dir.display()))
    };
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(unreadable(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(unreadable)?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let ft = e.file_type().map_err(unreadable)?;
        out.push((name, ft));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Whether a walk enters this directory (a real one, not a link: see the module doc).
fn descends(dir: &Path, name: &str, ft: fs::FileType) -> bool {
    ft.is_dir()
        && !name.starts_with('.')
        && name != "__pycache__"
        && !dir.join(name).join("CACHEDIR.TAG").exists()
}

/// Whether a directory entry counts as a file: a regular file, a link to one, or a dangling
/// link (kept so that hashing reports it rather than silently leaving it out of the key).
fn is_file(path: &Path, ft: fs::FileType) -> bool {
    if ft.is_file() {
        return true;
    }
    ft.is_symlink() && fs::metadata(path).map_or(true, |m| m.is_file())
}

/// Every file below `dir` (not hidden, not in `__pycache__`), shown below `shown`.
fn walk_dir(dir: &Path, shown: &str, out: &mut Vec<String>) -> Result<(), ExpandError> {
    for (name, ft) in list(dir)? {
        if name.starts_with('.') {
            continue;
        }
        if descends(dir, &name, ft) {
            walk_dir(&dir.join(&name), &child(shown, &name), out)?;
        } else if is_file(&dir.join(&name), ft) {
            out.push(child(shown, &name));
        }
    }
    Ok(())
}

/// One component of a glob.
#[derive(Debug)]
enum Segment {
    /// `**`: zero or more directories.
    Deep,
    /// No wildcard: this name exactly (`..` and `.` too).
    Name(String),
    Pattern(Component),
}

fn glob(workdir: &Path, pattern: &str) -> Result<Vec<String>, ExpandError> {
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let first = parts.iter().position(|p| is_glob(p)).unwrap_or(parts.len());
    let mut prefix = if pattern.starts_with('/') {
        "/".to_owned()
    } else {
        String::new()
    };
    prefix.push_str(&parts[..first].join("/"));
    let segments: Vec<Segment> = parts[first..]
        .iter()
        .map(|&p| match p {
            "**" => Segment::Deep,
            p if !is_glob(p) => Segment::Name(p.to_owned()),
            p => Segment::Pattern(Component::parse(p)),
        })
        .collect();
    let mut out = Vec::new();
    walk_glob(&workdir.join(&prefix), &prefix, &segments, &mut out)?;
    Ok(out)
}

fn walk_glob(
    dir: &Path,
    shown: &str,
    segments: &[Segment],
    out: &mut Vec<String>,
) -> Result<(), ExpandError> {
    let Some((segment, rest)) = segments.split_first() else {
        return Ok(());
    };
    match segment {
        Segment::Deep if rest.is_empty() => walk_dir(dir, shown, out)?,
        Segment::Deep => {
            walk_glob(dir, shown, rest, out)?;
            for (name, ft) in list(dir)? {
                if descends(dir, &name, ft) {
                    walk_glob(&dir.join(&name), &child(shown, &name), segments, out)?;
                }
            }
        }
        Segment::Name(name) => {
            let path = dir.join(name);
            if rest.is_empty() {
                if let Ok(m) = fs::symlink_metadata(&path)
                    && is_file(&path, m.file_type())
                {
                    out.push(child(shown, name));
                }
            } else if path.is_dir() {
                walk_glob(&path, &child(shown, name), rest, out)?;
            }
        }
        Segment::Pattern(component) => {
            for (name, ft) in list(dir)? {
                if !component.matches(&name) {
                    continue;
                }
                let path = dir.join(&name);
                if rest.is_empty() {
                    if is_file(&path, ft) {
                        out.push(child(shown, &name));
                    }
                } else if path.is_dir() {
                    // One named level may be a link: a pattern has finitely many components,
                    // and `**` never follows one, so no cycle can form.
                    walk_glob(&path, &child(shown, &name), rest, out)?;
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Token {
    Char(char),
    /// `?`
    One,
    /// `*`
    Any,
    /// `[…]`: inclusive ranges (`a` is `a-a`), negated by a leading `!` or `^`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Char(x) => *x == c,
            Token::One => true,
            Token::Any => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// A glob for one path component (no `/`).
#[derive(Debug)]
pub(crate) struct Component(Vec<Token>);

impl Component {
    pub(crate) fn parse(pattern: &str) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => tokens.push(Token::Any),
                '?' => tokens.push(Token::One),
                '[' => {
                    if let Some((token, next)) = parse_class(&chars, i) {
                        tokens.push(token);
                        i = next;
                        continue;
                    }
                    // An unclosed `[` is itself, as in a shell.
                    tokens.push(Token::Char('['));
                }
                c => tokens.push(Token::Char(c)),
            }
            i += 1;
        }
        Component(tokens)
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        // A leading `.` is matched only by a `.` written there.
        if name.starts_with('.') && self.0.first() != Some(&Token::Char('.')) {
            return false;
        }
        let name: Vec<char> = name.chars().collect();
        let tokens = &self.0;
        let (mut t, mut n) = (0, 0);
        // Where the last `*` was and how much of the name it has taken: on a mismatch, it
        // takes one more character (linear backtracking, enough for a single component).
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match tokens.get(t) {
                Some(Token::Any) => {
                    star = Some((t, n));
                    t += 1;
                    continue;
                }
                Some(tok) if tok.matches(name[n]) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((st, sn)) => {
                    star = Some((st, sn + 1));
                    t = st + 1;
                    n = sn + 1;
                }
                None => return false,
            }
        }
        tokens[t..].iter().all(|tok| *tok == Token::Any)
    }
}

/// The class opening at `chars[open]` (`[`) and the index after its `]`, or `None` if it is
/// not closed. A `]` right after `[` or `[!` is a member.
fn parse_class(chars: &[char], open: usize) -> Option<(Token, usize)> {
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Component::parse(pattern).matches(name)
    }

    #[test]
    fn stars_questions_and_literals() {
        assert!(m("*.py", "model.py"));
        assert!(!m("*.py", ".py"));
        assert!(m("*", "x"));
        assert!(m("*", ""));
        assert!(!m("*.py", "model.pyc"));
        assert!(m("*_test*.py", "a_test_b.py"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("?.txt", "a.txt"));
        assert!(!m("?.txt", "ab.txt"));
        assert!(m("model.py", "model.py"));
        assert!(!m("model.py", "model.pyx"));
        assert!(m("**", "anything"), "`**` within a component is `*`");
        assert!(m("é?", "éü"), "characters, not bytes");
    }

    #[test]
    fn classes() {
        assert!(m("[abc].py", "b.py"));
        assert!(!m("[abc].py", "d.py"));
        assert!(m("v[0-9]", "v7"));
        assert!(!m("v[0-9]", "vx"));
        assert!(m("[!a]x", "bx"));
        assert!(!m("[!a]x", "ax"));
        assert!(m("[^a]x", "bx"));
        assert!(m("[]a]", "]"), "`]` first is a member");
        assert!(m("[a-]", "-"), "`-` last is a member");
        assert!(m("data[1].csv", "data1.csv"));
        assert!(!m("data[1].csv", "data[1].csv"));
        assert!(m("[x", "[x"), "an unclosed `[` is itself");
        assert!(m("[a-cx-z]*", "y_file"));
    }

    #[test]
    fn a_leading_dot_must_be_written() {
        assert!(!m("*", ".hidden"));
        assert!(!m("?hidden", ".hidden"));
        assert!(!m("[.]hidden", ".hidden"));
        assert!(m(".*", ".hidden"));
        assert!(m(".h?dden", ".hidden"));
        assert!(m("*.*", "a.b"), "only a leading dot is special");
    }

    /// A tree with files at several depths, hidden files and directories, `__pycache__`, a
    /// nested cache, and links.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            "src/a.py",
            "src/b.py",
            "src/notes.txt",
            "src/.hidden.py",
            "src/x/c.py",
            "src/x/y/d.py",
            "src/x/y/e.txt",
            "src/.git/f.py",
            "src/__pycache__/a.cpython-311.pyc",
            "src/cache/CACHEDIR.TAG",
            "src/cache/v1/g.py",
            "top.py",
            "data[1].csv",
            "other/h.py",
        ];
        for f in files {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        fs::create_dir_all(dir.path().join("empty/sub")).unwrap();
        dir
    }

    fn files(dir: &Path, entry: &str) -> Result<Vec<String>, ExpandError> {
        match expand(dir, entry)? {
            Expansion::Literal => Ok(vec![format!("literal {entry}")]),
            Expansion::Matched(files) => Ok(files.to_vec()),
        }
    }

    #[test]
    fn a_directory_is_every_visible_file_below_it() {
        let t = tree();
        let all = [
            "src/a.py",
            "src/b.py",
            "src/notes.txt",
            "src/x/c.py",
            "src/x/y/d.py",
            "src/x/y/e.txt",
        ];
        assert_eq!(files(t.path(), "src").unwrap(), all);
        assert_eq!(files(t.path(), "src/").unwrap(), all);
        assert_eq!(files(t.path(), "src//").unwrap(), all);
        assert_eq!(
            files(t.path(), "./src/x").unwrap(),
            ["./src/x/c.py", "./src/x/y/d.py", "./src/x/y/e.txt"]
        );
        assert_eq!(
            files(&t.path().join("src/x"), ".").unwrap(),
            ["c.py", "y/d.py", "y/e.txt"]
        );
        assert_eq!(
            files(&t.path().join("src"), "../other").unwrap(),
            ["../other/h.py"]
        );
        // Named explicitly, a hidden directory is walked.
        assert_eq!(files(t.path(), "src/.git").unwrap(), ["src/.git/f.py"]);
        assert_eq!(files(t.path(), "empty"), Err(ExpandError::NoMatch));
        assert_eq!(files(t.path(), "missing/"), Err(ExpandError::NoMatch));
        let abs = t.path().join("src/x/y");
        let abs = abs.to_str().unwrap();
        assert_eq!(
            files(t.path(), abs).unwrap(),
            [format!("{abs}/d.py"), format!("{abs}/e.txt")]
        );
    }

    #[test]
    fn globs_match_files_at_any_depth() {
        let t = tree();
        let f = |p| files(t.path(), p);
        // `**` in the middle: zero or more directories, none hidden, cached or `__pycache__`.
        assert_eq!(
            f("src/**/*.py").unwrap(),
            ["src/a.py", "src/b.py", "src/x/c.py", "src/x/y/d.py"]
        );
        // At the start.
        assert_eq!(f("**/*.txt").unwrap(), ["src/notes.txt", "src/x/y/e.txt"]);
        assert_eq!(f("**/d.py").unwrap(), ["src/x/y/d.py"]);
        // At the end: every visible file below.
        assert_eq!(
            f("src/x/**").unwrap(),
            ["src/x/c.py", "src/x/y/d.py", "src/x/y/e.txt"]
        );
        // One level only.
        assert_eq!(f("src/*.py").unwrap(), ["src/a.py", "src/b.py"]);
        // Only walks skip caches: a `*` names the directory.
        assert_eq!(
            f("src/*/*/?.py").unwrap(),
            ["src/cache/v1/g.py", "src/x/y/d.py"]
        );
        assert_eq!(f("src/[ab].py").unwrap(), ["src/a.py", "src/b.py"]);
        assert_eq!(f("src/[!a].py").unwrap(), ["src/b.py"]);
        assert_eq!(f("*.py").unwrap(), ["top.py"]);
        // Directories never match; hidden names only when the dot is written.
        assert_eq!(
            f("src/*"),
            Ok(vec![
                "src/a.py".into(),
                "src/b.py".into(),
                "src/notes.txt".into()
            ])
        );
        assert_eq!(f("src/.*.py").unwrap(), ["src/.hidden.py"]);
        assert_eq!(f("src/.git/*").unwrap(), ["src/.git/f.py"]);
        // A named `__pycache__` is entered: only walks skip it.
        assert_eq!(
            f("src/__pycache__/*.pyc").unwrap(),
            ["src/__pycache__/a.cpython-311.pyc"]
        );
        // Literal components after a wildcard, `..` included.
        assert_eq!(f("src/*/y/d.py").unwrap(), ["src/x/y/d.py"]);
        assert_eq!(f("src/[x]/../a.py").unwrap(), ["src/x/../a.py"]);
        // Two patterns' worth of overlap within one pattern give each file once.
        assert_eq!(f("src/**/**/c.py").unwrap(), ["src/x/c.py"]);
        assert_eq!(f("src/**/*.rs"), Err(ExpandError::NoMatch));
        assert_eq!(f("nowhere/**/*.py"), Err(ExpandError::NoMatch));
        let abs = format!("{}/src/x/*.py", t.path().display());
        assert_eq!(
            f(&abs).unwrap(),
            [format!("{}/src/x/c.py", t.path().display())]
        );
    }

    #[test]
    fn existing_files_and_plain_paths_are_literal() {
        let t = tree();
        let f = |p| files(t.path(), p);
        assert_eq!(f("top.py").unwrap(), ["literal top.py"]);
        assert_eq!(f("./src/a.py").unwrap(), ["literal ./src/a.py"]);
        // A file named like a glob is that file.
        assert_eq!(f("data[1].csv").unwrap(), ["literal data[1].csv"]);
        // Missing plain paths stay literal: hashing says they cannot be read.
        assert_eq!(f("missing.py").unwrap(), ["literal missing.py"]);
        assert_eq!(f("").unwrap(), ["literal "]);
    }

    #[cfg(unix)]
    #[test]
    fn links_to_files_are_followed_links_to_directories_are_not() {
        use std::os::unix::fs::symlink;
        let t = tree();
        let root = t.path();
        symlink(root.join("top.py"), root.join("src/x/linked.py")).unwrap();
        symlink(root.join("src"), root.join("src/x/loop")).unwrap();
        symlink(root.join("gone.py"), root.join("src/x/dangling.py")).unwrap();
        let expected = [
            "src/x/c.py",
            "src/x/dangling.py",
            "src/x/linked.py",
            "src/x/y/d.py",
        ];
        assert_eq!(files(root, "src/x/**/*.py").unwrap(), expected);
        assert_eq!(
            files(root, "src/x").unwrap(),
            [
                "src/x/c.py",
                "src/x/dangling.py",
                "src/x/linked.py",
                "src/x/y/d.py",
                "src/x/y/e.txt"
            ]
        );
        // A link named by one level of the pattern is entered, once.
        assert_eq!(
            files(root, "src/x/loop/*.py").unwrap(),
            ["src/x/loop/a.py", "src/x/loop/b.py"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_unlistable_directory_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let t = tree();
        let locked = t.path().join("src/x");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        // Root can list anything: nothing to check then.
        let readable = fs::read_dir(&locked).is_ok();
        let got = files(t.path(), "src/**/*.py");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        if !readable {
            assert!(
                matches!(&got, Err(ExpandError::Unreadable(why)) if why.contains("src/x")),
                "{got:?}"
            );
        }
    }
}
