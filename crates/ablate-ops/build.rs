//! Embeds the `ablate` Python module (`python/ablate/` at the repository's root) so that a
//! `cmd` stage's program can `import ablate` from any checkout or install: the binary writes
//! the module once to a directory it puts on `PYTHONPATH` (see `src/cmd/python.rs`). The same
//! files are the wheel's module, so the module a script imports always speaks the running
//! binary's protocol.

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.join("../../python/ablate");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    assert!(
        files.iter().any(|(rel, _)| rel == "__init__.py"),
        "the Python module `{}` is missing: it is part of the repository",
        root.display()
    );
    files.sort();
    let mut code = String::from(
        "/// The `ablate` Python module's files: (path inside `ablate/`, contents).\n\
         pub(crate) const PYTHON_MODULE: &[(&str, &str)] = &[\n",
    );
    for (rel, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        code.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("python_module.rs"), code).expect("write python_module.rs");
}

/// Every `.py` file under `dir`, with its path relative to `root` (`/`-separated).
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "__pycache__") {
                collect(root, &path, out);
            }
        } else if path.extension().is_some_and(|e| e == "py") {
            let rel = path.strip_prefix(root).expect("under root");
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
}
