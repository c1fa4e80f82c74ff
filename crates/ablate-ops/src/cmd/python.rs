//! The `ablate` Python module for `cmd` programs: the binary carries the module's files
//! (`python/ablate/`, embedded by `build.rs`) and writes them once per version to a directory
//! under the system's temporary directory, which `cmd` puts first on `PYTHONPATH`. A script
//! then says `import ablate` whether or not the wheel is installed, and gets the module that
//! speaks this binary's protocol.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

include!(concat!(env!("OUT_DIR"), "/python_module.rs"));

/// The directory that holds `ablate/` (to put on `PYTHONPATH`), written on first use; `None`
/// when it cannot be written (the program then finds an installed module, or none).
pub(crate) fn module_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| write_module(&std::env::temp_dir()))
        .as_deref()
}

/// Writes the module under `parent` in a directory named by its contents' hash (so two
/// versions never share one, and a finished one is never rewritten), through a temporary
/// sibling renamed into place: a program never sees half a module.
fn write_module(parent: &Path) -> Option<PathBuf> {
    let mut all = Vec::new();
    for (rel, text) in PYTHON_MODULE {
        all.extend_from_slice(rel.as_bytes());
        all.push(0);
        all.extend_from_slice(text.as_bytes());
        all.push(0);
    }
    let digest = ablate_cache::Digest::of_bytes(&all).to_hex();
    let dir = parent.join(format!("ablate-python-{}", &digest[..16]));
    if dir.join("ablate/__init__.py").is_file() {
        return Some(dir);
    }
    let tmp = parent.join(format!(
        ".ablate-python-{}.{}.tmp",
        &digest[..16],
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = PYTHON_MODULE.iter().try_for_each(|(rel, text)| {
        let path = tmp.join("ablate").join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in ablate/"))?;
        std::fs::write(path, text)
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        return None;
    }
    // Another process may have put the same module in place meanwhile: either copy is it.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir.join("ablate/__init__.py").is_file().then_some(dir)
}

/// `PYTHONPATH` with `dir` first, keeping what the user set after it.
pub(crate) fn python_path(dir: &Path, inherited: Option<std::ffi::OsString>) -> std::ffi::OsString {
    let mut value = dir.as_os_str().to_owned();
    if let Some(old) = inherited.filter(|v| !v.is_empty()) {
        value.push(":");
        value.push(old);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_is_written_once_whole_and_named_by_its_contents() {
        let parent = tempfile::tempdir().unwrap();
        let dir = write_module(parent.path()).unwrap();
        for (rel, text) in PYTHON_MODULE {
            assert_eq!(
                std::fs::read_to_string(dir.join("ablate").join(rel)).unwrap(),
                *text
            );
        }
        // A second call finds it and leaves no temporary directory behind.
        assert_eq!(write_module(parent.path()).unwrap(), dir);
        let names: Vec<_> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [dir.file_name().unwrap()]);
    }

    #[test]
    fn pythonpath_puts_the_module_first_and_keeps_the_users() {
        let dir = Path::new("/tmp/m");
        assert_eq!(python_path(dir, None), "/tmp/m");
        assert_eq!(python_path(dir, Some("".into())), "/tmp/m");
        assert_eq!(python_path(dir, Some("/a:/b".into())), "/tmp/m:/a:/b");
    }
}
