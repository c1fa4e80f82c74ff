//! The end of a log file, for error messages: a failed command's stderr, a Slurm task's log.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// At most this many bytes are read from the end of a log, however large it is.
pub const TAIL_WINDOW: u64 = 16 * 1024;

/// The last `lines` lines of a file, read from its last [`TAIL_WINDOW`] bytes only and
/// decoded lossily (a stray non-UTF-8 byte never hides the tail), or a note that it cannot be
/// read.
pub fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL_WINDOW)))?;
        let mut bytes = Vec::new();
        f.take(TAIL_WINDOW).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_gives_the_last_lines_of_a_large_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.err");
        let text: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(tail(&path, 2), "line 9998\nline 9999");
        std::fs::write(&path, "only\n").unwrap();
        assert_eq!(tail(&path, 20), "only");
        assert!(tail(&dir.path().join("missing"), 3).starts_with("(cannot read"));
    }

    #[test]
    fn a_huge_single_line_log_yields_at_most_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.err");
        let mut text = vec![b'x'; 4 << 20];
        text.extend_from_slice(b"\nlast\n");
        std::fs::write(&path, &text).unwrap();
        let t = tail(&path, 10);
        assert!(t.len() as u64 <= TAIL_WINDOW, "{} bytes", t.len());
        assert!(t.ends_with("\nlast"));
    }

    #[test]
    fn a_non_utf8_byte_does_not_hide_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.err");
        std::fs::write(&path, b"first\n\xff\xfe bad bytes\nTraceback: boom\n").unwrap();
        let t = tail(&path, 2);
        assert!(
            t.contains("bad bytes") && t.ends_with("Traceback: boom"),
            "{t}"
        );
    }
}
