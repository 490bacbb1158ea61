//! Getting the runners ready: the workspace and its target directory, the jitvm binary
//! (built by cargo), the C peers (compiled by gcc -O2), and the interpreters found on PATH.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: two levels above this crate's manifest (`crates/bench`). Taken from
/// the path cargo compiled in, so the suite finds `bench/programs` from any current
/// directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// Where cargo puts build outputs: `$CARGO_TARGET_DIR` (relative to the workspace root if
/// relative), else `target` in the workspace root, the same rule cargo follows when no
/// config file says otherwise.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The cargo to build with: `$CARGO`, which cargo sets for the programs it runs (so the
/// same toolchain builds jitvm as built the suite), else `cargo` on PATH.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Builds the jitvm binary with `cargo build [--release] --bin jitvm` in the workspace and
/// returns its path. Building rather than assuming one exists means the numbers are always
/// for the code in the work tree.
pub fn build_jitvm(root: &Path, release: bool) -> Result<PathBuf, String> {
    let mut build = Command::new(cargo());
    build.current_dir(root).args(["build", "--bin", "jitvm"]);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| format!("cannot run {}: {e}", cargo().display()))?;
    if !status.success() {
        return Err(format!("`cargo build --bin jitvm` failed ({status})"));
    }
    let profile = if release { "release" } else { "debug" };
    let binary = target_dir(root).join(profile).join("jitvm");
    if !binary.is_file() {
        return Err(format!(
            "cargo built jitvm, but {} is missing",
            binary.display()
        ));
    }
    Ok(binary)
}

/// Compiles `source` with `gcc -O2 -pthread` into `out` (`-pthread` for the programs that
/// use threads; it changes nothing for the others).
pub fn compile_c(gcc: &Path, source: &Path, out: &Path) -> Result<(), String> {
    let output = Command::new(gcc)
        .args([OsStr::new("-O2"), OsStr::new("-pthread"), OsStr::new("-o")])
        .arg(out)
        .arg(source)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", gcc.display()))?;
    if !output.status.success() {
        return Err(format!(
            "gcc -O2 {} failed ({}):\n{}",
            source.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// The first executable file called `name` in a directory of `$PATH`, the way a shell
/// would find it, or `None` when the tool is not installed.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_benchmark_programs() {
        assert!(workspace_root().join("bench/programs").is_dir());
    }

    #[test]
    fn a_tool_that_is_nowhere_on_path_is_not_found() {
        assert_eq!(find_on_path("no-such-tool-jitvm-bench"), None);
        assert!(find_on_path("sh").is_some());
    }
}
