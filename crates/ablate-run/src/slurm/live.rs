//! The latest line of a running task's metrics log, read from the shared cache by the
//! orchestrator for its progress line (issue 24). A bounded read of the file's end: the log of a
//! long run can be large, and only its last complete line is shown.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// The log's name in an instance's checkpoint directory (where a `cmd` writes it, so that it
/// survives attempts).
pub(super) const METRICS_LOG: &str = "metrics.jsonl";

/// How much of the log's end is read.
const TAIL: u64 = 64 * 1024;

/// The step and numeric values of the log's last complete line that parses: its `step`, or
/// for a log without steps, the line's index. `None` while there is none.
pub(super) fn latest(log: &Path) -> Option<(u64, Vec<(String, f64)>)> {
    let mut file = fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    // Only complete lines: the program may be writing the last one.
    let end = bytes.iter().rposition(|&b| b == b'\n')?;
    let complete = &bytes[..end];
    for line in complete.split(|&b| b == b'\n').rev() {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(line) else {
            continue;
        };
        let step = match map.get("step").and_then(serde_json::Value::as_u64) {
            Some(step) => step,
            // Lines without a step count from 0, as the local view counts them.
            None => count_lines(log)?.saturating_sub(1),
        };
        let values = map
            .into_iter()
            .filter(|(k, _)| k != "step")
            .filter_map(|(k, v)| v.as_f64().map(|x| (k, x)))
            .collect();
        return Some((step, values));
    }
    None
}

fn count_lines(log: &Path) -> Option<u64> {
    let bytes = fs::read(log).ok()?;
    Some(bytes.iter().filter(|&&b| b == b'\n').count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_complete_line_is_shown_and_a_half_written_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        assert_eq!(latest(&log), None);
        fs::write(&log, "{\"step\": 10, \"loss\": 0.5}\n{\"step\": 20, \"lo").unwrap();
        assert_eq!(latest(&log), Some((10, vec![("loss".into(), 0.5)])));
        fs::write(
            &log,
            "{\"step\": 10, \"loss\": 0.5}\n{\"step\": 20, \"loss\": 0.25, \"tag\": \"x\"}\n",
        )
        .unwrap();
        assert_eq!(latest(&log), Some((20, vec![("loss".into(), 0.25)])));
        fs::write(&log, "{\"loss\": 3}\n{\"loss\": 2}\n{\"loss\": 1}\n").unwrap();
        assert_eq!(latest(&log), Some((2, vec![("loss".into(), 1.0)])));
    }
}
