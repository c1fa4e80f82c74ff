//! What the benchmark examples share.

/// CPU time (user + system, all threads) this process has used, in seconds, from
/// `/proc/self/stat` (Linux; 10 ms resolution): shows how much of the wall time the run
/// actually got a core. `None` where that file is missing or unreadable.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
