use std::collections::HashSet;
use std::fmt::Write as _;

use ablate_cache::{LEGACY_MANIFEST_FORMAT, Lookup, VerifyMode};

use crate::cli::{CacheArgs, CacheCommand, Global, SpecArgs};
use crate::load::{load, open_store};

pub fn cache(global: &Global, args: CacheArgs) -> anyhow::Result<u8> {
    let store = open_store(&global.cache)?;
    // Printed at the end: `--fix` removes every invalid entry even when stdout has gone.
    let mut out = String::new();
    let code = match args.command {
        CacheCommand::Ls => {
            let entries = store.entries()?;
            let total: u64 = entries.iter().map(|e| e.size).sum();
            for e in &entries {
                match &e.manifest {
                    Some(m) => {
                        let origin = if m.origin.label.is_empty() {
                            m.origin.stage.clone()
                        } else {
                            format!("{}[{}]", m.origin.stage, m.origin.label)
                        };
                        let _ = writeln!(
                            out,
                            "{}  {:<12} {:>9}  {:>7.2}s  {}/{}",
                            e.key.short(),
                            m.input.op,
                            human_bytes(e.size),
                            m.seconds,
                            m.origin.pipeline,
                            origin
                        );
                    }
                    None => {
                        let _ = writeln!(out, "{}  (no readable manifest)", e.key.short());
                    }
                }
            }
            let _ = writeln!(
                out,
                "{} entries, {} in `{}`",
                entries.len(),
                human_bytes(total),
                store.root().display()
            );
            crate::EXIT_OK
        }
        CacheCommand::Verify { fix } => {
            let keys = store.keys()?;
            let (mut bad, mut legacy) = (0, 0);
            for key in &keys {
                let why = match store.verify(key, VerifyMode::Full) {
                    Lookup::Hit(m) => {
                        legacy += usize::from(m.format == LEGACY_MANIFEST_FORMAT);
                        continue;
                    }
                    Lookup::Invalid(why) => why,
                    Lookup::Miss => "the entry disappeared while being verified".into(),
                };
                bad += 1;
                if fix {
                    store.remove(key)?;
                    let _ = writeln!(out, "removed {}: {why}", key.short());
                } else {
                    let _ = writeln!(out, "invalid {}: {why}", key.short());
                }
            }
            let _ = writeln!(
                out,
                "{} entries verified, {bad} invalid{}",
                keys.len(),
                if fix && bad > 0 { " (removed)" } else { "" }
            );
            if legacy > 0 {
                let _ = writeln!(
                    out,
                    "{legacy} of them predate manifest checksums: their files were verified, their \
                     metadata (metrics, params) cannot be"
                );
            }
            if bad > 0 && !fix {
                crate::EXIT_FAILURE
            } else {
                crate::EXIT_OK
            }
        }
        CacheCommand::Gc { pipelines, dry_run } => {
            let keep = if pipelines.is_empty() {
                None
            } else {
                let mut keep = HashSet::new();
                for file in pipelines {
                    let loaded = load(&SpecArgs {
                        file,
                        set: vec![],
                        matrix: vec![],
                        force: vec![],
                        device: None,
                    })?;
                    keep.extend(loaded.plan.instances().map(|(_, i)| i.key));
                }
                Some(keep)
            };
            let r = store.gc(keep.as_ref(), dry_run)?;
            let _ = writeln!(
                out,
                "{} {} entries and {} leftovers, {}",
                if dry_run { "would remove" } else { "removed" },
                r.entries,
                r.leftovers,
                human_bytes(r.bytes)
            );
            for why in &r.refused {
                eprintln!("warning: gc left it alone: {why}");
            }
            crate::EXIT_OK
        }
    };
    crate::stdout::print(&out)?;
    Ok(code)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
