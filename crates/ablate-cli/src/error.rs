//! Error rendering: `error: failed to …`, then `Caused by:` lines, then a `hint:`. Input
//! errors (a bad pipeline, bad arguments) exit with 2, everything else with 1.

use std::fmt;
use std::process::ExitCode;

use ablate_spec::Diagnostics;

use crate::{EXIT_FAILURE, EXIT_INVALID_INPUT};

/// The user's input is wrong: exit code 2.
#[derive(Debug)]
pub struct InputError {
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// Every problem in a pipeline file, already rendered with locations: exit code 2.
#[derive(Debug)]
pub struct SpecErrors(pub Diagnostics);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SpecErrors {}

pub fn input(message: impl Into<String>, hint: Option<String>) -> anyhow::Error {
    anyhow::Error::new(InputError {
        message: message.into(),
        hint,
    })
}

pub fn report(e: &anyhow::Error) -> ExitCode {
    if let Some(SpecErrors(d)) = e.downcast_ref::<SpecErrors>() {
        let n = d.items.len();
        eprint!("{d}");
        if !d.to_string().ends_with('\n') {
            eprintln!();
        }
        if n > 1 {
            eprintln!("\nerror: the pipeline has {n} problems");
        }
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    let (code, hint) = if let Some(i) = e.downcast_ref::<InputError>() {
        (EXIT_INVALID_INPUT, i.hint.clone())
    } else {
        (EXIT_FAILURE, None)
    };
    eprintln!("error: {e}");
    let mut causes = e.chain().skip(1).peekable();
    if causes.peek().is_some() {
        eprintln!("  Caused by:");
        for c in causes {
            eprintln!("    {c}");
        }
    }
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(code)
}
