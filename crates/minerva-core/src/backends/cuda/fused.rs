//! Compiled graphs on CUDA (`crate::graph`): each fused kernel of a plan becomes one
//! generated CUDA kernel (one thread per value of its result, the inlined nodes evaluated in
//! registers, a row reduction as a loop), compiled by NVRTC once per plan and cached by its
//! source. Compiled without fused multiply-adds and with IEEE division and square roots, so
//! a plan without exp or tanh gives the CPU's bits.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{result as cu, sys};

use super::{compile, CudaDevice};
use crate::graph::{Binary, NodeId, Op, Plan, Reduce, Unary};
use crate::{Array, DType, Error, Result};

fn float(v: f32) -> String {
    format!("__int_as_float(0x{:08x})", v.to_bits())
}

/// CUDA C for plan kernel `k`, named `fused_{k}`: parameters are the buffers it reads (in
/// `Kernel::reads` order), then its output.
fn kernel_source(plan: &Plan, k: usize, src: &mut String) {
    let kernel = &plan.kernels[k];
    let param = |node: usize| kernel.reads.iter().position(|&r| r == node);
    // Node `x`'s value at (row, column `j`) as read by a node of `shape`.
    let operand = |x: NodeId, shape: &[usize], j: &str| -> String {
        let node = &plan.nodes[x.0];
        let xd = node.dims();
        let col = if *xd.last().unwrap() == 1 { "0" } else { j };
        if kernel.fused.contains(&x.0) {
            return format!("v{}(R, row, {col})", x.0);
        }
        if let Op::Constant(c) = node.op {
            return float(c);
        }
        // A buffer: its flat offset from the row's indices over `shape`'s leading axes.
        let lead = &shape[..shape.len() - 1];
        let pad = shape.len() - xd.len();
        let mut offset = String::from("0");
        for (d, &size) in xd.iter().enumerate() {
            let axis = pad + d;
            let index = if size == 1 {
                "0".to_string()
            } else if axis == shape.len() - 1 {
                col.to_string()
            } else {
                let inner: usize = lead[axis + 1..].iter().product();
                format!("((row / {inner}L) % {})", lead[axis])
            };
            offset = format!("({offset}) * {size}L + {index}");
        }
        let p = param(x.0).expect("a read");
        format!("R.in{p}[{offset}]")
    };
    for &i in &kernel.fused {
        let node = &plan.nodes[i];
        let shape = node.dims();
        let body = match node.op {
            Op::Constant(c) => format!("return {};", float(c)),
            Op::Input(_) => unreachable!("inputs are read, never fused"),
            Op::Unary(op, x) => {
                let a = operand(x, &shape, "j");
                let e: String = match op {
                    Unary::Neg => "-a".into(),
                    Unary::Exp => "expf(a)".into(),
                    Unary::Recip => "1.0f / a".into(),
                    Unary::Sqrt => "sqrtf(a)".into(),
                    Unary::Rsqrt => "1.0f / sqrtf(a)".into(),
                    Unary::Square => "a * a".into(),
                    Unary::Sigmoid => "1.0f / (1.0f + expf(-a))".into(),
                    Unary::Silu => "a / (1.0f + expf(-a))".into(),
                    Unary::Tanh => "tanhf(a)".into(),
                };
                format!("const float a = {a}; return {e};")
            }
            Op::Binary(op, x, y) => {
                let (a, b) = (operand(x, &shape, "j"), operand(y, &shape, "j"));
                let e = match op {
                    Binary::Add => "a + b",
                    Binary::Sub => "a - b",
                    Binary::Mul => "a * b",
                    Binary::Div => "a / b",
                    Binary::Max => "fmaxf(a, b)",
                    Binary::Min => "fminf(a, b)",
                };
                format!("const float a = {a}, b = {b}; return {e};")
            }
            Op::Reduce(op, x) => {
                let xd = plan.nodes[x.0].dims();
                let len = *xd.last().unwrap();
                let v = operand(x, &xd, "c");
                let (init, step) = match op {
                    Reduce::Sum => ("0.0f".to_string(), "acc + v"),
                    Reduce::Max => (float(f32::NEG_INFINITY), "fmaxf(acc, v)"),
                };
                format!(
                    "float acc = {init}; for (int c = 0; c < {len}; c++) {{ const float v = {v}; \
                     acc = {step}; }} return acc;"
                )
            }
        };
        let _ = writeln!(
            src,
            "__device__ __forceinline__ float v{i}(const Reads{k}& R, long row, int j) {{ {body} }}"
        );
    }
    // The inputs reach the node functions through a struct of pointers.
    let root = plan.nodes[kernel.root].dims();
    let width = *root.last().unwrap();
    let numel: usize = root.iter().product();
    let params: Vec<String> = (0..kernel.reads.len())
        .map(|p| format!("const float* __restrict__ in{p}"))
        .collect();
    let _ = writeln!(
        src,
        "extern \"C\" __global__ void fused_{k}({}float* __restrict__ out) {{\n  \
         const Reads{k} R{{{}}};\n  \
         for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < {numel}L; \
         i += (long)gridDim.x * blockDim.x) {{\n    \
         out[i] = v{}(R, i / {width}L, (int)(i % {width}L));\n  }}\n}}",
        params.iter().map(|p| format!("{p}, ")).collect::<String>(),
        (0..kernel.reads.len())
            .map(|p| format!("in{p}"))
            .collect::<Vec<_>>()
            .join(", "),
        kernel.root
    );
}

/// The whole plan's source: per kernel a struct of its input pointers (what the node
/// functions read), its node functions and its kernel.
fn plan_source(plan: &Plan) -> String {
    let mut src = String::new();
    for k in 0..plan.kernels.len() {
        let fields: String = (0..plan.kernels[k].reads.len())
            .map(|p| format!("const float* in{p}; "))
            .collect();
        let _ = writeln!(src, "struct Reads{k} {{ {fields}}};");
        kernel_source(plan, k, &mut src);
    }
    src
}

/// A plan's kernels, loaded.
struct Module {
    functions: Vec<sys::CUfunction>,
}

// SAFETY: function handles are driver objects usable from any thread once their context is
// current, which `CudaDevice::bind` ensures before each launch.
unsafe impl Send for Module {}
// SAFETY: as above.
unsafe impl Sync for Module {}

/// Loaded plans by (device ordinal, source): each distinct plan compiles once.
type Modules = Mutex<HashMap<(usize, String), Arc<Module>>>;

fn modules() -> &'static Modules {
    static MODULES: OnceLock<Modules> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

fn module(dev: &CudaDevice, plan: &Plan) -> Result<Arc<Module>> {
    let source = plan_source(plan);
    let key = (dev.ordinal, source);
    if let Some(m) = modules().lock().expect("modules").get(&key) {
        return Ok(Arc::clone(m));
    }
    let arch = dev.arch;
    let options = [
        format!("--gpu-architecture=sm_{}{}", arch.0, arch.1),
        "--fmad=false".to_string(),
        "--prec-div=true".to_string(),
        "--prec-sqrt=true".to_string(),
    ];
    let cubin = compile::compile(&key.1, &options).map_err(|e| dev.err("compiling a graph", e))?;
    dev.bind()?;
    // SAFETY: `cubin` is a complete CUBIN for this device's architecture; the context is
    // current (bound above). The module stays loaded for the life of the process.
    let loaded = unsafe { cu::module::load_data(cubin.as_ptr().cast()) }
        .map_err(|e| dev.err("loading a graph's kernels", e))?;
    let functions = (0..plan.kernels.len())
        .map(|k| {
            let name = std::ffi::CString::new(format!("fused_{k}")).expect("no NUL");
            // SAFETY: the module was just loaded in this device's context.
            unsafe { cu::module::get_function(loaded, name) }
                .map_err(|e| dev.err("a graph kernel", e))
        })
        .collect::<Result<Vec<_>>>()?;
    let m = Arc::new(Module { functions });
    modules()
        .lock()
        .expect("modules")
        .insert(key, Arc::clone(&m));
    Ok(m)
}

/// Runs `plan` on f32 `inputs` on `dev` and returns its outputs (queued).
pub(crate) fn run_plan(
    dev: &Arc<CudaDevice>,
    plan: &Plan,
    inputs: &[&Array],
) -> Result<Vec<Array>> {
    for node in &plan.nodes {
        if let Op::Input(k) = node.op {
            let a = inputs
                .get(k)
                .ok_or_else(|| Error::Shape(format!("graph input {k} not given")))?;
            if a.dtype() != DType::F32 || a.numel() != node.numel() {
                return Err(Error::Shape(format!(
                    "graph input {k}: {} {:?} for f32 {:?}",
                    a.dtype(),
                    a.shape(),
                    node.shape
                )));
            }
        }
    }
    let module = module(dev, plan)?;
    let arena = dev.alloc(4 * plan.memory.arena.max(1))?;
    let address = |node: usize| -> Result<u64> {
        match plan.nodes[node].op {
            Op::Input(k) => inputs[k].device_ptr(),
            _ => Ok(arena.ptr() + 4 * plan.memory.of(node).expect("a buffer").offset as u64),
        }
    };
    dev.bind()?;
    for (k, kernel) in plan.kernels.iter().enumerate() {
        let mut args: Vec<u64> = kernel
            .reads
            .iter()
            .map(|&r| address(r))
            .collect::<Result<_>>()?;
        args.push(address(kernel.root)?);
        let mut params: Vec<*mut std::ffi::c_void> =
            args.iter_mut().map(|a| (a as *mut u64).cast()).collect();
        let n = plan.memory.buffers[k].len;
        let blocks = n.div_ceil(256).clamp(1, 4 * dev.multiprocessors as usize) as u32;
        // SAFETY: `fused_k` takes one pointer per read and one output pointer, as `params`
        // holds; every pointer addresses a live buffer (the inputs, or the arena, which
        // lives until this function's copies below are queued after the kernels).
        unsafe {
            cu::launch_kernel(
                module.functions[k],
                (blocks, 1, 1),
                (256, 1, 1),
                0,
                dev.stream,
                &mut params,
            )
        }
        .map_err(|e| dev.err("launching a graph kernel", e))?;
    }
    plan.outputs
        .iter()
        .map(|&o| {
            let node = &plan.nodes[o];
            let out = Array::empty_cuda(dev, DType::F32, &node.shape)?;
            dev.copy(out.device_ptr()?, address(o)?, 4 * node.numel().max(1))?;
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{compile as compile_graph, Graph};

    /// Generated kernels compile for Hopper wherever NVRTC loads (no GPU needed).
    #[test]
    fn generated_kernels_compile_for_sm90() {
        if let Err(why) = compile::nvrtc_ready() {
            eprintln!("SKIPPED generated_kernels_compile_for_sm90: {why}");
            return;
        }
        let mut g = Graph::new();
        let x = g.input(&[3, 8]);
        let w = g.input(&[8]);
        let y = g.rms_norm(x, w, 1e-5).unwrap();
        let m = g.reduce(Reduce::Max, y).unwrap();
        let shifted = g.binary(Binary::Sub, y, m).unwrap();
        let e = g.unary(Unary::Exp, shifted);
        let s = g.reduce(Reduce::Sum, e).unwrap();
        let p = g.binary(Binary::Div, e, s).unwrap();
        let plan = compile_graph(&g, &[p, y]);
        let source = plan_source(&plan);
        let options = [
            "--gpu-architecture=sm_90".to_string(),
            "--fmad=false".to_string(),
        ];
        let cubin = compile::compile(&source, &options).unwrap_or_else(|e| panic!("{e}\n{source}"));
        assert!(cubin.starts_with(b"\x7fELF"));
    }
}
