use anyhow::Context as _;

use crate::cli::TableArgs;

pub fn table(args: TableArgs) -> anyhow::Result<u8> {
    if !args.file.exists() {
        return Err(crate::error::input(
            format!("`{}` does not exist", args.file.display()),
            None,
        ));
    }
    let table = ablate_results::read_table(&args.file)
        .with_context(|| format!("failed to read `{}`", args.file.display()))?;
    let text = if args.markdown {
        ablate_results::render_markdown(&table)
    } else {
        ablate_results::render_text(&table)
    };
    crate::stdout::print(&text)?;
    Ok(crate::EXIT_OK)
}
