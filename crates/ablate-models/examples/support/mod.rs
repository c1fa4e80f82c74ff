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

/// `cpu`, `dfdx` (dfdx's CPU device) or, in a `cuda` build, `cuda` / `cuda:N`.
#[allow(dead_code)]
pub fn parse_backend(s: &str) -> Result<ablate_models::Backend, String> {
    use ablate_models::Backend;
    match s {
        "cpu" => Ok(Backend::Cpu),
        "dfdx" => Ok(Backend::Dfdx),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Backend::Cuda(0)),
        #[cfg(feature = "cuda")]
        s if s.starts_with("cuda:") => s[5..]
            .parse()
            .map(Backend::Cuda)
            .map_err(|e| format!("`{s}`: {e}")),
        other => Err(format!(
            "unknown backend `{other}` (cpu, dfdx{})",
            if cfg!(feature = "cuda") {
                ", cuda, cuda:N"
            } else {
                "; cuda needs `--features cuda`"
            }
        )),
    }
}

/// The name [`parse_backend`] reads.
#[allow(dead_code)]
pub fn backend_name(b: ablate_models::Backend) -> String {
    use ablate_models::Backend;
    match b {
        Backend::Cpu => "cpu".into(),
        Backend::Dfdx => "dfdx".into(),
        #[cfg(feature = "cuda")]
        Backend::Cuda(n) => format!("cuda:{n}"),
    }
}
