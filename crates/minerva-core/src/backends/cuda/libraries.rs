//! Finding CUDA's run-time libraries (NVRTC, cuBLAS) when they are not on the loader's
//! path: the bindings load them by soname, so one found under the usual CUDA folders (or
//! `$CUDA_HOME/lib64`) is loaded once by full path and stays loaded.

use std::path::PathBuf;

/// Places CUDA's libraries are commonly installed.
const CUDA_DIRS: [&str; 2] = [
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/targets/x86_64-linux/lib",
];

/// Makes the library `what` (file names starting with `prefix`, e.g. "libnvrtc.so.")
/// loadable; `present` asks the bindings whether they can load it now.
pub(super) fn ready(what: &str, prefix: &str, present: impl Fn() -> bool) -> Result<(), String> {
    if present() {
        return Ok(());
    }
    let mut dirs: Vec<PathBuf> = CUDA_DIRS.iter().map(PathBuf::from).collect();
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        dirs.insert(0, PathBuf::from(home).join("lib64"));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && !name.contains("alt") {
                // SAFETY: loading a CUDA library runs only its own initializers; it stays
                // loaded for the life of the process (leaked on purpose) so the bindings'
                // lookup by soname finds it.
                if let Ok(lib) = unsafe { libloading::Library::new(entry.path()) } {
                    std::mem::forget(lib);
                    if present() {
                        return Ok(());
                    }
                }
            }
        }
    }
    Err(format!(
        "{what} ({prefix}*) was not found; add CUDA's lib64 folder to LD_LIBRARY_PATH or set CUDA_HOME"
    ))
}
