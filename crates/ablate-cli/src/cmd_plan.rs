use ablate_plan::Format;

use crate::cli::{Global, PlanArgs, PlanFormat};
use crate::load::{load, open_store};

pub fn plan(global: &Global, args: PlanArgs) -> anyhow::Result<u8> {
    let loaded = load(&args.spec)?;
    let store = open_store(&global.cache)?;
    let forced: Vec<&str> = loaded.forced.iter().map(String::as_str).collect();
    let statuses = ablate_plan::statuses(&loaded.plan, &store, &forced);
    let format = match args.format {
        PlanFormat::Text => Format::Text,
        PlanFormat::Json => Format::Json,
        PlanFormat::Dot => Format::Dot,
        PlanFormat::Mermaid => Format::Mermaid,
    };
    let out = ablate_plan::render(&loaded.plan, &statuses, format);
    crate::stdout::print(&out)?;
    // The process ends here: freeing a 10k-instance plan piece by piece is measurable time
    // spent on nothing.
    std::mem::forget((loaded, statuses, out));
    Ok(crate::EXIT_OK)
}
