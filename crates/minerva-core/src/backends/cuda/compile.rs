//! Compiles the kernel sources with NVRTC into a CUBIN for one GPU architecture, caching the
//! result on disk (Minerva's cache folder — `$MINERVA_HOME`, else `$XDG_CACHE_HOME/minerva`
//! or `~/.cache/minerva` — under `cuda/`) keyed by a hash of the sources, options and NVRTC
//! version, so only the first run pays for it.

use std::ffi::CString;
use std::path::PathBuf;

use cudarc::nvrtc::{result as rtc, sys as rtc_sys};

/// Every kernel, in one translation unit (one compile, one module).
const SOURCES: [&str; 8] = [
    include_str!("kernels/common.cuh"),
    include_str!("kernels/products.cuh"),
    include_str!("kernels/linear.cu"),
    include_str!("kernels/tensor_products.cu"),
    include_str!("kernels/experts.cu"),
    include_str!("kernels/elementwise.cu"),
    include_str!("kernels/attention.cu"),
    include_str!("kernels/sampling.cu"),
];

/// What the product kernels a compiled graph generates build on: the shared helpers and
/// the weight formats.
pub(super) const PRODUCT_FORMATS: [&str; 2] = [
    include_str!("kernels/common.cuh"),
    include_str!("kernels/products.cuh"),
];

fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = var("MINERVA_HOME")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("minerva")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/minerva")))?;
    Some(home.join("cuda"))
}

/// Makes libnvrtc loadable (see [`super::libraries`]).
pub(super) fn nvrtc_ready() -> Result<(), String> {
    // SAFETY: `is_culib_present` only tries to dlopen NVRTC by its usual names.
    super::libraries::ready("NVRTC", "libnvrtc.so.", || unsafe {
        rtc_sys::is_culib_present()
    })
}

fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints through valid pointers.
    let _ = unsafe { rtc_sys::nvrtcVersion(&mut major, &mut minor) };
    (major, minor)
}

/// The CUBIN of all kernels for compute capability `arch`.
pub(super) fn kernels_cubin(arch: (i32, i32)) -> Result<Vec<u8>, String> {
    nvrtc_ready()?;
    let options = [
        format!("--gpu-architecture=sm_{}{}", arch.0, arch.1),
        "--std=c++17".to_string(),
        "--extra-device-vectorization".to_string(),
        "-lineinfo".to_string(),
    ];
    cached_compile("kernels", &SOURCES.concat(), &options, arch)
}

/// [`compile`], through the disk cache: `{name}-{hash}-sm{arch}.cubin`, the hash covering
/// the source, the options and the NVRTC version.
pub(super) fn cached_compile(
    name: &str,
    source: &str,
    options: &[String],
    arch: (i32, i32),
) -> Result<Vec<u8>, String> {
    let (major, minor) = nvrtc_version();
    let mut key = fnv1a(source.as_bytes(), 0xcbf2_9ce4_8422_2325);
    key = fnv1a(options.concat().as_bytes(), key);
    key = fnv1a(format!("nvrtc {major}.{minor}").as_bytes(), key);
    let path =
        cache_dir().map(|d| d.join(format!("{name}-{key:016x}-sm{}{}.cubin", arch.0, arch.1)));
    if let Some(cached) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(cached);
    }
    let cubin = compile(source, options)?;
    if let Some(path) = path {
        // A cache that cannot be written only costs a recompile next time.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &cubin).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(cubin)
}

pub(super) fn compile(source: &str, options: &[String]) -> Result<Vec<u8>, String> {
    let src = CString::new(source).map_err(|_| "kernel source contains NUL".to_string())?;
    let prog = rtc::create_program(&src, Some(c"minerva_kernels.cu"))
        .map_err(|e| format!("NVRTC: {e:?}"))?;
    // SAFETY: `prog` was just created and is destroyed exactly once below; the buffers
    // handed to NVRTC are sized by the sizes it reports.
    unsafe {
        let compiled = rtc::compile_program(prog, options);
        let result = match compiled {
            Ok(()) => {
                let mut size = 0usize;
                rtc_sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| format!("NVRTC CUBIN size: {e:?}"))
                    .and_then(|()| {
                        let mut cubin = vec![0u8; size];
                        rtc_sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast())
                            .result()
                            .map(|()| cubin)
                            .map_err(|e| format!("NVRTC CUBIN: {e:?}"))
                    })
            }
            Err(e) => {
                let log = rtc::get_program_log(prog)
                    .map(|l| {
                        let bytes: Vec<u8> = l.iter().map(|&c| c as u8).collect();
                        String::from_utf8_lossy(&bytes)
                            .trim_end_matches('\0')
                            .to_string()
                    })
                    .unwrap_or_default();
                Err(format!("NVRTC failed ({e:?}):\n{log}"))
            }
        };
        let _ = rtc::destroy_program(prog);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels compile for Hopper wherever NVRTC can be loaded (no GPU needed); CI
    /// machines without NVRTC say so and skip.
    #[test]
    fn kernels_compile_for_sm90() {
        if let Err(why) = nvrtc_ready() {
            eprintln!("SKIPPED kernels_compile_for_sm90: {why}");
            return;
        }
        let options = [
            "--gpu-architecture=sm_90".to_string(),
            "--std=c++17".to_string(),
        ];
        let cubin = compile(&SOURCES.concat(), &options).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.starts_with(b"\x7fELF"), "a CUBIN is an ELF image");
    }
}
