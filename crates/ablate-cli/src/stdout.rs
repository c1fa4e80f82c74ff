//! Results on stdout. A reader that goes away (`ablate ops | head -1`) ends the output quietly
//! with exit 0, like ripgrep, instead of `print!`'s panic.

use std::io::Write as _;

use anyhow::Context as _;

/// Writes `text` to stdout and flushes it; a broken pipe is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("failed to write to stdout")
        }
        _ => Ok(()),
    }
}
