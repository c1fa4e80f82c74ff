//! `{out}/metrics.jsonl`: the metrics a program logs as it runs, one JSON object a line
//! (`{"step": 10, "loss": 0.4}`). Read as it grows for the progress line, and at the end into
//! stepped metrics (every value with its step) and final ones (the last value of each).
//!
//! The file lives in the instance's checkpoint directory, linked from `{out}`: lines logged by
//! an attempt that was killed or failed are still there for the attempt that resumes, so the
//! curve of a resumed run is whole. Beside it, `metrics.jsonl.attempts` holds the byte offset
//! where each attempt began: a line without `step` counts from 0 again in a new attempt (a
//! program that logs no steps starts over when it is retried, #21).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use ablate_cache::{EntryStatus, Metric};
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
/// otherwise be glued to). Returns where each attempt began in it, this one last.
pub(crate) fn prepare(log: &Path) -> std::io::Result<Vec<u64>> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(log)?;
    let len = file.metadata()?.len();
    let kept = if len == 0 {
        0
    } else {
        last_line_end(&mut file, len)?
    };
    if kept < len {
        file.set_len(kept)?;
    }
    let sidecar = attempts_file(log);
    let mut starts: Vec<u64> = fs::read_to_string(&sidecar)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&o| o < kept)
        .collect();
    if starts.first() != Some(&0) {
        // A log from before offsets were noted began with an attempt too.
        starts.insert(0, 0);
    }
    if starts.last() != Some(&kept) {
        starts.push(kept);
    }
    if starts.len() == 1 {
        // The first attempt on an empty log: nothing to note (a file less per instance); a
        // stale note from a log that was cut to nothing goes.
        match fs::remove_file(&sidecar) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    } else {
        let text: String = starts.iter().map(|o| format!("{o}\n")).collect();
        fs::write(&sidecar, text)?;
    }
    Ok(starts)
}

fn attempts_file(log: &Path) -> std::path::PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".attempts");
    name.into()
}

/// The length of `file` up to its last newline (0 when it has none).
fn last_line_end(file: &mut fs::File, len: u64) -> std::io::Result<u64> {
    // Look back for the last newline, a block at a time.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        if start == 0 {
            return Ok(0);
        }
        end = start;
    }
}

/// Follows this attempt's lines of a log as the program appends them: for the progress line,
/// and to notice a divergence as soon as it is logged.
pub(crate) struct Live {
    offset: u64,
    partial: Vec<u8>,
    last: Option<Line>,
    shown: Option<Instant>,
    looked: Option<Instant>,
    diverged: bool,
}

impl Live {
    /// From `start`, where this attempt began in the log.
    pub(crate) fn new(start: u64) -> Self {
        Live {
            offset: start,
            partial: Vec::new(),
            last: None,
            shown: None,
            looked: None,
            diverged: false,
        }
    }

    /// Whether a line read so far holds a non-finite value: the attempt has nothing more to
    /// train (#21: a program whose loss went NaN at epoch 2 trained on to its last epoch).
    pub(crate) fn diverged(&self) -> bool {
        self.diverged
    }

    /// The step of the latest line read so far.
    pub(crate) fn step(&self) -> Option<u64> {
        self.last.as_ref().map(|(s, _)| *s)
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
                self.diverged |= values.iter().any(|(_, v)| !v.is_finite());
                self.last = Some((s, values));
            }
        }
        let Some((step, values)) = &self.last else {
            return;
        };
        self.shown = Some(Instant::now());
        progress(Progress::metrics(*step, values));
    }
}

/// One line of the log: its step and its numeric values, in order.
type Line = (u64, Vec<(String, f64)>);

/// One line: `None` for a blank one, else its step (its own `step`, or the previous line's
/// plus one, from 0) and its numeric values in order, `NaN`/`Infinity`/`-Infinity` included.
/// Other values (strings, booleans) are not metrics and are skipped.
fn parse_line(line: &[u8], previous: Option<u64>) -> Result<Option<Line>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Value::Object(map) = parse_json(line)? else {
        return Err("is not a JSON object".into());
    };
    let step = match map.get("step") {
        None => previous.map_or(0, |s| s + 1),
        Some(s) => s.as_u64().ok_or_else(|| {
            format!(
                "has `step` = {}, not a whole number ≥ 0",
                number(s).map_or_else(|| s.to_string(), |x| x.to_string())
            )
        })?,
    };
    let values = map
        .into_iter()
        .filter(|(k, _)| k != "step")
        .filter_map(|(k, v)| number(&v).map(|x| (k, x)))
        .collect();
    Ok(Some((step, values)))
}

/// Marks a non-finite number in a parsed line: no JSON string a program writes starts with NUL.
const NON_FINITE: char = '\0';

/// JSON, plus the `NaN`, `Infinity` and `-Infinity` that Python's `json.dumps` writes by
/// default (and JavaScript's JSON never does): outside strings, each is read as a marked
/// string that [`number`] turns into the float it means.
pub(crate) fn parse_json(text: &[u8]) -> Result<Value, String> {
    let parsed = match non_finite_as_strings(text) {
        Some(rewritten) => serde_json::from_slice(&rewritten),
        None => serde_json::from_slice(text),
    };
    parsed.map_err(|e| format!("is not JSON: {e}"))
}

/// A value as a metric: a JSON number, or a non-finite one marked by [`parse_json`].
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.strip_prefix(NON_FINITE)? {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// `text` with every `NaN`, `Infinity` and `-Infinity` outside a string replaced by a marked
/// string; `None` when it has none (the common case: nothing is copied).
fn non_finite_as_strings(text: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    if !text.windows(3).any(|w| w == b"NaN" || w == b"Inf") {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| text[i..].starts_with(t)) {
            out.extend_from_slice(b"\"\\u0000");
            out.extend_from_slice(token);
            out.push(b'"');
            i += token.len();
            continue;
        }
        out.push(b);
        i += 1;
    }
    Some(out)
}

/// What a finished program's log says.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Each value at its step, then the last value of each metric as its final one; for a run
    /// that diverged, only the values of the steps before the divergence.
    pub metrics: Vec<Metric>,
    /// The non-finite value of the lowest step: the run diverged there.
    pub diverged: Option<EntryStatus>,
}

/// Every line of the log as metrics: each value at its step (a step logged twice, as when an
/// attempt resumed from an earlier checkpoint, keeps its last value), then the last value of
/// each metric as its final one. `starts`: where each attempt began ([`prepare`]); a line
/// without `step` follows the line before it in the same attempt, or is step 0.
///
/// A non-finite value (`NaN`, `Infinity`) that no later line of the same step replaced marks
/// the run diverged at that step: it keeps the values of the steps before, and has no final
/// values (what a model measures at or after its divergence is not a result).
pub(crate) fn read(log: &Path, starts: &[u64]) -> Result<Log, OpError> {
    let bytes = match fs::read(log) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Log::default()),
        Err(e) => {
            return Err(OpError::with(
                format!("failed to read `{}`", log.display()),
                e,
            ));
        }
    };
    let mut stepped: BTreeMap<(String, u64), (usize, f64)> = BTreeMap::new();
    let mut step = None;
    let mut offset = 0u64;
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if starts.contains(&offset) {
            step = None;
        }
        offset += line.len() as u64 + 1;
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
            stepped.insert((name, s), (n, v));
        }
    }
    let diverged = stepped
        .iter()
        .filter(|(_, (_, v))| !v.is_finite())
        .min_by_key(|((_, s), (n, _))| (*s, *n))
        .map(|((name, s), (_, v))| EntryStatus::diverged(name.clone(), Some(*s), *v));
    let before = match &diverged {
        Some(EntryStatus::Diverged { step: Some(s), .. }) => *s,
        _ => u64::MAX,
    };
    // In the order they were logged, so runs.parquet reads like the log.
    let mut at_steps: Vec<(usize, String, u64, f64)> = stepped
        .into_iter()
        .filter(|((_, s), _)| *s < before)
        .map(|((name, s), (n, v))| (n, name, s, v))
        .collect();
    at_steps.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    let mut metrics = Vec::with_capacity(at_steps.len());
    for (_, name, s, v) in &at_steps {
        metrics.push(Metric::at_step(name.clone(), *s, *v));
        last.insert(name, *v);
    }
    if diverged.is_none() {
        metrics.extend(last.into_iter().map(|(name, v)| Metric::new(name, v)));
    }
    Ok(Log { metrics, diverged })
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
        let starts = prepare(&log).unwrap();
        assert_eq!(starts.len(), 2);
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        use std::io::Write as _;
        writeln!(f, "{{\"step\": 2, \"loss\": 0.65, \"acc\": 0.5}}").unwrap();
        writeln!(f).unwrap();
        writeln!(f, "{{\"loss\": 0.5, \"acc\": 0.75}}").unwrap();
        let metrics = read(&log, &starts).unwrap().metrics;
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
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        fs::write(
            &log,
            "{\"step\": 0, \"loss\": 1.0}\n{\"step\": 1, \"loss\": 0.5,}\n",
        )
        .unwrap();
        let e = read(&log, &[0]).unwrap_err().to_string();
        assert!(e.contains("line 2 of `metrics.jsonl` is not JSON"), "{e}");
        fs::write(&log, "[1, 2]\n").unwrap();
        assert!(
            read(&log, &[0])
                .unwrap_err()
                .to_string()
                .contains("not a JSON object")
        );
        fs::write(&log, "{\"step\": -1}\n").unwrap();
        assert!(
            read(&log, &[0])
                .unwrap_err()
                .to_string()
                .contains("whole number")
        );
        fs::write(&log, "{\"step\": NaN}\n").unwrap();
        let e = read(&log, &[0]).unwrap_err().to_string();
        assert!(e.contains("`step` = NaN, not a whole number"), "{e}");
    }

    /// Python's `json.dumps` writes `NaN`, `Infinity` and `-Infinity`: they were a parse error
    /// that lost the log, and the retry that resumed from the checkpoint was committed with an
    /// empty one (#21).
    #[test]
    fn python_non_finite_numbers_mark_the_run_diverged_where_they_first_appear() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        fs::write(
            &log,
            "{\"step\": 0, \"loss\": 1.0, \"note\": \"NaN is fine in a string\"}\n\
             {\"step\": 1, \"loss\": 0.5, \"acc\": -Infinity}\n\
             {\"step\": 2, \"loss\": NaN, \"acc\": Infinity}\n",
        )
        .unwrap();
        let Log { metrics, diverged } = read(&log, &[0]).unwrap();
        assert_eq!(
            diverged.unwrap().to_string(),
            "diverged: `acc` = -inf at step 1"
        );
        // The steps before it; no final values (a diverged run has no result to quote).
        let kept: Vec<(String, Option<u64>, f64)> = metrics
            .iter()
            .map(|m| (m.name.clone(), m.step, m.value))
            .collect();
        assert_eq!(kept, [("loss".to_owned(), Some(0), 1.0)]);

        // A resumed attempt that logs the step again with a finite value undoes it.
        fs::write(
            &log,
            "{\"step\": 0, \"loss\": 1.0}\n{\"step\": 1, \"loss\": NaN}\n{\"step\": 1, \"loss\": 0.4}\n",
        )
        .unwrap();
        let Log { metrics, diverged } = read(&log, &[0]).unwrap();
        assert!(diverged.is_none());
        assert!(metrics.contains(&Metric::new("loss", 0.4)));
    }

    /// A program that logs no `step` and does not resume starts over when it is retried: its
    /// lines counted on from the failed attempt's, and 5 epochs made an 8-step curve (#21).
    #[test]
    fn lines_without_a_step_count_from_0_in_each_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        assert_eq!(prepare(&log).unwrap(), [0]);
        fs::write(&log, "{\"loss\": 10}\n{\"loss\": 9}\n{\"loss\": 8}\n").unwrap();
        let starts = prepare(&log).unwrap();
        let first = fs::metadata(&log).unwrap().len();
        assert_eq!(starts, [0, first]);
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        use std::io::Write as _;
        for loss in [10, 9, 8, 7, 6] {
            writeln!(f, "{{\"loss\": {loss}}}").unwrap();
        }
        let metrics = read(&log, &starts).unwrap().metrics;
        let curve: Vec<(u64, f64)> = metrics
            .iter()
            .filter_map(|m| Some((m.step?, m.value)))
            .collect();
        assert_eq!(curve, [(0, 10.0), (1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0)]);
        // The offsets are kept for the next attempt, and a log cut back forgets later ones.
        let second = fs::metadata(&log).unwrap().len();
        assert_eq!(prepare(&log).unwrap(), [0, first, second]);
    }

    /// The first attempt on an empty log notes nothing (a file less for every instance), and
    /// a log cut to nothing forgets the offsets noted for it.
    #[test]
    fn an_empty_log_has_no_attempts_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        assert_eq!(prepare(&log).unwrap(), [0]);
        assert!(!attempts_file(&log).exists());
        fs::write(&log, "{\"loss\": 1}\n").unwrap();
        assert_eq!(prepare(&log).unwrap().len(), 2);
        assert!(attempts_file(&log).exists());
        fs::write(&log, "").unwrap();
        assert_eq!(prepare(&log).unwrap(), [0]);
        assert!(!attempts_file(&log).exists());
    }

    #[test]
    fn non_finite_tokens_are_rewritten_outside_strings_only() {
        let v = parse_json(br#"{"a": NaN, "b": "x\" NaN", "c": [-Infinity, Infinity]}"#).unwrap();
        assert!(number(&v["a"]).unwrap().is_nan());
        assert_eq!(v["b"], "x\" NaN");
        assert_eq!(number(&v["c"][0]), Some(f64::NEG_INFINITY));
        assert_eq!(number(&v["c"][1]), Some(f64::INFINITY));
        assert!(parse_json(b"{\"a\": Nan}").is_err());
    }

    #[test]
    fn the_live_view_reports_the_latest_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(METRICS_LOG);
        fs::write(&log, "{\"step\": 4, \"loss\": 0.25}\n{\"step\": 5, \"lo").unwrap();
        let mut live = Live::new(0);
        let mut seen = Vec::new();
        live.poll(&log, |p| seen.push(p));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].step, 4);
        assert_eq!(seen[0].message.as_deref(), Some("step 4: loss 0.2500"));
    }
}
