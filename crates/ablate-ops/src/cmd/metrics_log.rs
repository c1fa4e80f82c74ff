//! `{out}/metrics.jsonl`: the metrics a program logs as it runs, one JSON object a line
//! (`{"step": 10, "loss": 0.4}`). Read as it grows for the progress line, and at the end into
//! stepped metrics (every value with its step) and final ones (the last value of each).
//!
//! The file lives in the instance's checkpoint directory, linked from `{out}`: lines logged by
//! an attempt that was killed or failed are still there for the attempt that resumes, so the
//! curve of a resumed run is whole.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use ablate_cache::Metric;
use ablate_run::{OpError, Progress};
use serde_json::Value;

/// The file name, in `{out}` and in the checkpoint directory.
pub(crate) const METRICS_LOG: &str = "metrics.jsonl";

/// How often the progress line is updated from the log.
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// How often the log is looked at before it has a line to show.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Makes `log` ready for an attempt: created if missing, and cut back to its last complete
/// line (an attempt killed mid-write leaves half a line, which the next one's first line would
/// otherwise be glued to).
pub(crate) fn prepare(log: &Path) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(log)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Look back for the last newline, a block at a time.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
            }
            return Ok(());
        }
        if start == 0 {
            return file.set_len(0);
        }
        end = start;
    }
}

/// Follows a log as the program appends to it, for the progress line.
pub(crate) struct Live {
    offset: u64,
    partial: Vec<u8>,
    last: Option<Line>,
    shown: Option<Instant>,
    looked: Option<Instant>,
}

impl Live {
    pub(crate) fn new() -> Self {
        Live {
            offset: 0,
            partial: Vec::new(),
            last: None,
            shown: None,
            looked: None,
        }
    }

    /// Reads what was appended since the last call and, at most every [`LIVE_EVERY`], reports
    /// the latest line: `step 120: loss 0.4012 acc 0.9100`. Lines that do not parse are left
    /// to the final read, which names them.
    pub(crate) fn poll(&mut self, log: &Path, progress: impl FnOnce(Progress)) {
        if self.shown.is_some_and(|t| t.elapsed() < LIVE_EVERY)
            || self.looked.is_some_and(|t| t.elapsed() < LOOK_EVERY)
        {
            return;
        }
        self.looked = Some(Instant::now());
        let Ok(mut file) = fs::File::open(log) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut fresh = Vec::new();
        let Ok(n) = file.read_to_end(&mut fresh) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        let mut step = self.last.as_ref().map(|(s, _)| *s);
        for line in complete.split(|&b| b == b'\n') {
            if let Ok(Some((s, values))) = parse_line(line, step) {
                step = Some(s);
                self.last = Some((s, values));
            }
        }
        let Some((step, values)) = &self.last else {
            return;
        };
        self.shown = Some(Instant::now());
        let values: Vec<String> = values
            .iter()
            .take(6)
            .map(|(k, v)| format!("{k} {}", short(*v)))
            .collect();
        progress(Progress {
            step: *step,
            total: 0,
            loss: None,
            message: Some(format!("step {step}: {}", values.join(" "))),
        });
    }
}

/// One line of the log: its step and its numeric values, in order.
type Line = (u64, Vec<(String, f64)>);

/// A number as a progress line shows it.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// One line: `None` for a blank one, else its step (its own `step`, or the previous line's
/// plus one, from 0) and its numeric values in order. Other values (strings, booleans) are
/// not metrics and are skipped.
fn parse_line(line: &[u8], previous: Option<u64>) -> Result<Option<Line>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        let text = String::from_utf8_lossy(line);
        let hint = if text.contains("NaN") || text.contains("Infinity") {
            " (NaN and Infinity are not JSON numbers: did the loss diverge?)"
        } else {
            ""
        };
        format!("is not JSON: {e}{hint}")
    })?;
    let Value::Object(map) = value else {
        return Err("is not a JSON object".into());
    };
    let step = match map.get("step") {
        None => previous.map_or(0, |s| s + 1),
        Some(s) => s
            .as_u64()
            .ok_or_else(|| format!("has `step` = {s}, not a whole number ≥ 0"))?,
    };
    let values = map
        .into_iter()
        .filter(|(k, _)| k != "step")
        .filter_map(|(k, v)| v.as_f64().map(|x| (k, x)))
        .collect();
    Ok(Some((step, values)))
}

/// Every line of the log as metrics: each value at its step (a step logged twice, as when an
/// attempt resumed from an earlier checkpoint, keeps its last value), then the last value of
/// each metric as its final one.
pub(crate) fn read(log: &Path) -> Result<Vec<Metric>, OpError> {
    let bytes = match fs::read(log) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(OpError::with(
                format!("failed to read `{}`", log.display()),
                e,
            ));
        }
    };
    let mut stepped: BTreeMap<(String, u64), (usize, f64)> = BTreeMap::new();
    let mut last: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    let mut step = None;
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let parsed = parse_line(line, step).map_err(|why| {
            OpError::msg(format!(
                "line {} of `{METRICS_LOG}` {why}; each line is a JSON object of numbers, e.g. \
                 {{\"step\": 10, \"loss\": 0.4}}",
                n + 1
            ))
        })?;
        let Some((s, values)) = parsed else { continue };
        step = Some(s);
        for (name, v) in values {
            if !v.is_finite() {
                return Err(OpError::msg(format!(
                    "line {} of `{METRICS_LOG}` has `{name}` = {v}, not a finite number",
                    n + 1
                )));
            }
            stepped.insert((name.clone(), s), (n, v));
            last.insert(name, (n, v));
        }
    }
    // In the order they were logged, so runs.parquet reads like the log.
    let mut at_steps: Vec<(usize, Metric)> = stepped
        .into_iter()
        .map(|((name, s), (n, v))| (n, Metric::at_step(name, s, v)))
        .collect();
    at_steps.sort_by_key(|(n, m)| (*n, m.name.clone()));
    let mut metrics: Vec<Metric> = at_steps.into_iter().map(|(_, m)| m).collect();
    metrics.extend(last.into_iter().map(|(name, (_, v))| Metric::new(name, v)));
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_finals_and_a_resumed_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        // Attempt 1 logs steps 0..2 and dies mid-line; attempt 2 resumes at step 2.
        fs::write(
            &log,
            "{\"step\": 0, \"loss\": 1.0}\n{\"step\": 1, \"loss\": 0.8, \"phase\": \"warm\"}\n\
             {\"step\": 2, \"loss\": 0.7}\n{\"step\": 3, \"lo",
        )
        .unwrap();
        prepare(&log).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        use std::io::Write as _;
        writeln!(f, "{{\"step\": 2, \"loss\": 0.65, \"acc\": 0.5}}").unwrap();
        writeln!(f).unwrap();
        writeln!(f, "{{\"loss\": 0.5, \"acc\": 0.75}}").unwrap();
        let metrics = read(&log).unwrap();
        let at = |name: &str, step: u64| {
            metrics
                .iter()
                .find(|m| m.name == name && m.step == Some(step))
                .map(|m| m.value)
        };
        assert_eq!(at("loss", 0), Some(1.0));
        assert_eq!(
            at("loss", 2),
            Some(0.65),
            "the resumed attempt's value wins"
        );
        assert_eq!(at("loss", 3), Some(0.5), "no `step`: the previous plus one");
        assert_eq!(at("acc", 3), Some(0.75));
        let finals: Vec<(&str, f64)> = metrics
            .iter()
            .filter(|m| m.step.is_none())
            .map(|m| (m.name.as_str(), m.value))
            .collect();
        assert_eq!(finals, [("acc", 0.75), ("loss", 0.5)]);
        assert_eq!(metrics.iter().filter(|m| m.name == "loss").count(), 5);
    }

    #[test]
    fn a_bad_line_is_named_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        fs::write(
            &log,
            "{\"step\": 0, \"loss\": 1.0}\n{\"step\": 1, \"loss\": NaN}\n",
        )
        .unwrap();
        let e = read(&log).unwrap_err().to_string();
        assert!(
            e.contains("line 2 of `metrics.jsonl`") && e.contains("diverge"),
            "{e}"
        );
        fs::write(&log, "[1, 2]\n").unwrap();
        assert!(
            read(&log)
                .unwrap_err()
                .to_string()
                .contains("not a JSON object")
        );
        fs::write(&log, "{\"step\": -1}\n").unwrap();
        assert!(read(&log).unwrap_err().to_string().contains("whole number"));
    }

    #[test]
    fn the_live_view_reports_the_latest_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        fs::write(&log, "{\"step\": 4, \"loss\": 0.25}\n{\"step\": 5, \"lo").unwrap();
        let mut live = Live::new();
        let mut seen = Vec::new();
        live.poll(&log, |p| seen.push(p));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].step, 4);
        assert_eq!(seen[0].message.as_deref(), Some("step 4: loss 0.2500"));
    }
}
