//! The text splits `data.text` writes, read back by the language-model ops.

use std::path::Path;

use ablate_models::lm;
use ablate_run::OpError;

/// Reads a split written by `data.text` into its documents.
pub(crate) fn read_split(path: &Path) -> Result<Vec<String>, OpError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| OpError::with(format!("failed to read `{}`", path.display()), e))?;
    Ok(lm::split_documents(&text))
}
