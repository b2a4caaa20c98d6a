//! cuBLAS for the products of prompts: many tokens times a weight is a matrix product that
//! tensor cores do far faster than the streaming kernels. Loaded at first use like NVRTC;
//! where it cannot be loaded, prompts fall back to Minerva's own product kernels.

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use cudarc::cublas::{result as blas, sys};

use super::CudaDevice;
use crate::Result;

/// A cuBLAS handle bound to a device's stream.
pub(super) struct Blas(Mutex<sys::cublasHandle_t>);

// SAFETY: a cuBLAS handle may be used from any thread, one call at a time (the mutex), with
// its device's context current (every caller binds it first).
unsafe impl Send for Blas {}
// SAFETY: as above.
unsafe impl Sync for Blas {}

impl Blas {
    /// A handle queuing on `stream`, or why cuBLAS cannot be used.
    pub(super) fn new(stream: cudarc::driver::sys::CUstream) -> std::result::Result<Blas, String> {
        // SAFETY: `is_culib_present` only tries to dlopen cuBLAS by its usual names.
        super::libraries::ready("cuBLAS", "libcublas.so.", || unsafe {
            sys::is_culib_present()
        })?;
        let handle = blas::create_handle().map_err(|e| format!("cuBLAS handle: {e:?}"))?;
        // SAFETY: a fresh handle and the device's live stream.
        if let Err(e) = unsafe { blas::set_stream(handle, stream.cast()) } {
            // SAFETY: destroyed once, and never used again.
            let _ = unsafe { blas::destroy_handle(handle) };
            return Err(format!("cuBLAS stream: {e:?}"));
        }
        Ok(Blas(Mutex::new(handle)))
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        let handle = *self.0.get_mut().expect("cuBLAS handle");
        // SAFETY: the handle was created by `new` and is destroyed once, here.
        let _ = unsafe { blas::destroy_handle(handle) };
    }
}

/// `y[m, n] (f32) = x[m, k] · w[n, k]ᵀ`, all row-major, `x` and `w` f16 at device
/// addresses, accumulated in f32 on tensor cores.
pub(super) struct HalfGemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub x: u64,
    pub w: u64,
    pub y: u64,
}

impl CudaDevice {
    /// Queues `g` on cuBLAS (callers check [`CudaDevice::has_blas`] first).
    pub(super) fn half_gemm(&self, g: &HalfGemm) -> Result<()> {
        let blas = self
            .blas()
            .ok_or_else(|| self.err("cuBLAS product", "cuBLAS is not available"))?;
        self.bind()?;
        let handle = blas.0.lock().expect("cuBLAS handle");
        let (alpha, beta, int) = (1.0f32, 0.0f32, |v: usize| v as c_int);
        self.profiled("cublas_gemm_f16", || {
            // Row-major y = x wᵀ is column-major yᵀ = w xᵀ: w as stored is the column-major
            // k×n matrix wᵀ, so it goes in transposed; x as stored is xᵀ (k×m).
            // SAFETY: the caller passes live device buffers of these shapes; cuBLAS reads
            // `alpha` and `beta` from the host before returning.
            unsafe {
                blas::gemm_ex(
                    *handle,
                    sys::cublasOperation_t::CUBLAS_OP_T,
                    sys::cublasOperation_t::CUBLAS_OP_N,
                    int(g.n),
                    int(g.m),
                    int(g.k),
                    (&alpha as *const f32).cast::<c_void>(),
                    g.w as *const c_void,
                    sys::cudaDataType::CUDA_R_16F,
                    int(g.k),
                    g.x as *const c_void,
                    sys::cudaDataType::CUDA_R_16F,
                    int(g.k),
                    (&beta as *const f32).cast::<c_void>(),
                    g.y as *mut c_void,
                    sys::cudaDataType::CUDA_R_32F,
                    int(g.n),
                    sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| self.err("cuBLAS product", format!("{e:?}")))
        })
    }
}
