use std::fmt::Write as _;

use ablate_ops::Registry;
use ablate_spec::OpCatalog as _;

use crate::cli::OpsArgs;
use crate::error::input;

pub fn ops(args: OpsArgs) -> anyhow::Result<u8> {
    let registry = Registry::builtin();
    let mut out = String::new();
    let mut shown = 0;
    for s in registry.schemas() {
        if args.op.as_deref().is_some_and(|o| o != s.name) {
            continue;
        }
        shown += 1;
        let _ = writeln!(out, "{} (version {})", s.name, s.version);
        let _ = writeln!(
            out,
            "  {}",
            s.summary.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        let needs = match s.needs {
            (0, Some(0)) => "no inputs".to_owned(),
            (a, Some(b)) if a == b => format!("{a} input{}", if a == 1 { "" } else { "s" }),
            (a, None) => format!("{a} or more inputs"),
            (a, Some(b)) => format!("{a} to {b} inputs"),
        };
        let _ = writeln!(
            out,
            "  takes {needs}{}",
            if s.gathers {
                "; gathers every upstream instance"
            } else {
                ""
            }
        );
        if s.free_params {
            let _ = writeln!(out, "  accepts any other param (as `{{param.NAME}}`)");
        }
        let w = s.params.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &s.params {
            let default = match &p.default {
                None => "required".to_owned(),
                Some(v) => format!("default {v}"),
            };
            let _ = writeln!(
                out,
                "    {:<w$}  {} ({default})\n    {:<w$}  {}",
                p.name, p.ty, "", p.doc
            );
        }
        out.push('\n');
    }
    if shown == 0 {
        let op = args.op.unwrap_or_default();
        let names = registry.op_names();
        let hint = match ablate_spec::did_you_mean(&op, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the ops are: {}", names.join(", ")),
        };
        let hint = Some(hint);
        return Err(input(format!("there is no op `{op}`"), hint));
    }
    let tag = &ablate_spec::TAG;
    let _ = writeln!(
        out,
        "Every op also takes `{}` ({}, optional): {}.",
        tag.name, tag.ty, tag.doc
    );
    crate::stdout::print(&out)?;
    Ok(crate::EXIT_OK)
}
