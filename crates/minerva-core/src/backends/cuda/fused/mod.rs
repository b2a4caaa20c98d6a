//! Compiled graphs on CUDA (`crate::graph`): each fused kernel of a plan becomes one
//! generated CUDA kernel, compiled by NVRTC once per plan and cached by its source. A flat
//! kernel gives each thread values of its domain, every fused node evaluated in registers;
//! a row kernel gives each block a row, sweeping it once per reduction (block-wide, by
//! warp shuffles) and once more for the values it writes. Compiled without fused
//! multiply-adds and with IEEE division and square roots, so flat plans without exp or tanh
//! give the CPU's bits; row sums add in a different order than the CPU's. Kernels of
//! products run on the product kernels of their weights' formats, or, with the passes
//! around them, as one generated chain ([`chain`]).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::{result as cu, sys};

mod chain;

use chain::Chain;

use super::ops::{linear_set_into, warp_row_format, LinearPtrs};
use super::{compile, CudaDevice};
use crate::graph::{Binary, Kernel, Op, Plan, Reduce, Unary};
use crate::{Array, DType, Error, Result};

fn float(v: f32) -> String {
    format!("__int_as_float(0x{:08x})", v.to_bits())
}

/// Block-wide reductions every row kernel uses: each thread's partial in, the row's value
/// out to every thread. XOR butterflies of a commutative op leave every lane the same bits,
/// and every warp folds the warps' partials alike.
const PRELUDE: &str = "
template <typename F>
__device__ __forceinline__ float block_fold(float v, float* red, float identity, F f) {
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < (int)(blockDim.x >> 5) ? red[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
struct SumOp { __device__ float operator()(float a, float b) const { return a + b; } };
struct MaxOp { __device__ float operator()(float a, float b) const { return fmaxf(a, b); } };
";

/// How kernel `k`'s nodes read their operands and compute their values.
struct Gen<'a> {
    plan: &'a Plan,
    /// What it computes: its nodes, domain and width.
    kernel: &'a Kernel,
    /// The buffers it reads (parameters `in{p}`) and the nodes it stores (`out{o}`).
    reads: &'a [usize],
    writes: &'a [usize],
    /// Values computed before, in registers `n{i}` (a chain's products, for its epilogue).
    registers: &'a [usize],
    /// A node whose rows also go to the shared tile `xs` (a chain's product input).
    staged: Option<usize>,
    /// A condition every global store also needs (a chain's prologue: its first blocks).
    guard: &'a str,
}

impl<'a> Gen<'a> {
    /// The generator of a plain plan kernel.
    fn of(plan: &'a Plan, kernel: &'a Kernel) -> Gen<'a> {
        Gen {
            plan,
            kernel,
            reads: &kernel.reads,
            writes: &kernel.writes,
            registers: &[],
            staged: None,
            guard: "",
        }
    }
}

impl Gen<'_> {
    /// Node `x`'s value at (`row`, column `j`) as read by a node of `dims`.
    fn operand(&self, x: usize, dims: &[usize], j: &str) -> String {
        let node = &self.plan.nodes[x];
        if self.kernel.nodes.contains(&x) || self.registers.contains(&x) {
            return match node.op {
                Op::Constant(c) => float(c),
                _ => format!("n{x}"),
            };
        }
        // A buffer: its flat offset from the row's indices over the domain's leading axes,
        // whose sizes are the kernel's parameters `L0, L1, ..`. Only an axis that
        // broadcasts over a longer one is in the source, so one kernel serves every number
        // of tokens, one token included: a decode step finds the kernels its prompt
        // compiled (and compiles nothing while a CUDA graph is being captured).
        let xd = node.dims();
        let lead = &self.kernel.lead;
        let pad = dims.len() - xd.len();
        let mut offset = String::from("0");
        for (d, &size) in xd.iter().enumerate() {
            let axis = pad + d;
            let last = axis == dims.len() - 1;
            let broadcast = size == 1 && (last || lead[axis] != 1);
            let (index, extent) = if broadcast {
                ("0".to_string(), "1".to_string())
            } else if last {
                (j.to_string(), format!("{size}L"))
            } else {
                let inner: String = (axis + 1..lead.len()).map(|a| format!(" / L{a}")).collect();
                (format!("((row{inner}) % L{axis})"), format!("L{axis}"))
            };
            offset = format!("({offset}) * {extent} + {index}");
        }
        let p = self.reads.iter().position(|&r| r == x);
        format!("in{}[{offset}]", p.expect("a read"))
    }

    /// `const float n{i} = ...;` for an elementwise node (or a constant).
    fn elementwise(&self, i: usize) -> String {
        let node = &self.plan.nodes[i];
        let dims = node.dims();
        let e = match node.op {
            Op::Constant(c) => float(c),
            Op::Unary(op, x) => {
                let a = self.operand(x.0, &dims, "j");
                match op {
                    Unary::Neg => format!("-({a})"),
                    Unary::Exp => format!("expf({a})"),
                    Unary::Recip => format!("1.0f / ({a})"),
                    Unary::Sqrt => format!("sqrtf({a})"),
                    Unary::Rsqrt => format!("1.0f / sqrtf({a})"),
                    Unary::Square => format!("({a}) * ({a})"),
                    Unary::Sigmoid => format!("1.0f / (1.0f + expf(-({a})))"),
                    Unary::Silu => format!("({a}) / (1.0f + expf(-({a})))"),
                    Unary::Tanh => format!("tanhf({a})"),
                }
            }
            Op::Binary(op, x, y) => {
                let (a, b) = (self.operand(x.0, &dims, "j"), self.operand(y.0, &dims, "j"));
                match op {
                    Binary::Add => format!("({a}) + ({b})"),
                    Binary::Sub => format!("({a}) - ({b})"),
                    Binary::Mul => format!("({a}) * ({b})"),
                    Binary::Div => format!("({a}) / ({b})"),
                    Binary::Max => format!("fmaxf({a}, {b})"),
                    Binary::Min => format!("fminf({a}, {b})"),
                }
            }
            Op::Input(_) | Op::Reduce(..) | Op::Product { .. } => unreachable!("not elementwise"),
        };
        format!("const float n{i} = {e};\n")
    }

    /// The stores of node `i` at (`row`, `j`): to its buffer where it is written, to the
    /// shared tile where it is staged.
    fn store(&self, i: usize) -> String {
        let mut code = String::new();
        let width = *self.plan.nodes[i].dims().last().unwrap();
        if let Some(o) = self.writes.iter().position(|&w| w == i) {
            code += &if width == 1 && self.kernel.width > 1 {
                format!("if ({}) out{o}[row] = n{i};\n", self.when("j == 0"))
            } else if self.guard.is_empty() {
                format!("out{o}[row * {width}L + j] = n{i};\n")
            } else {
                format!("if ({}) out{o}[row * {width}L + j] = n{i};\n", self.guard)
            };
        }
        if self.staged == Some(i) {
            code += &format!("xs[(row - t0) * {width}L + j] = n{i};\n");
        }
        code
    }

    /// The store of per-row value `i` (one thread's) where it is written.
    fn store_row(&self, i: usize) -> String {
        match self.writes.iter().position(|&w| w == i) {
            Some(o) => format!(
                "if ({}) out{o}[row] = n{i};\n",
                self.when("threadIdx.x == 0")
            ),
            None => String::new(),
        }
    }

    /// `condition`, and the guard where there is one.
    fn when(&self, condition: &str) -> String {
        match self.guard {
            "" => condition.to_string(),
            guard => format!("{guard} && {condition}"),
        }
    }

    /// The nodes of its own it stores somewhere: written or staged.
    fn stored(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self
            .writes
            .iter()
            .copied()
            .filter(|w| self.kernel.nodes.contains(w))
            .collect();
        all.extend(self.staged.filter(|s| !self.writes.contains(s)));
        all
    }

    /// The value reduction `r` starts from.
    fn identity(&self, r: usize) -> String {
        match self.plan.nodes[r].op {
            Op::Reduce(Reduce::Sum, _) => "0.0f".to_string(),
            _ => float(f32::NEG_INFINITY),
        }
    }

    /// Whether node `i` has one value per row of a wider row kernel (a reduction, or a
    /// value computed from reductions and per-row operands).
    fn per_row(&self, i: usize) -> bool {
        matches!(self.plan.nodes[i].op, Op::Reduce(..))
            || (*self.plan.nodes[i].dims().last().unwrap() == 1 && self.kernel.width > 1)
    }

    /// A flat kernel's body for the value at (`row`, `j`): every node, then the stores.
    fn flat_body(&self) -> String {
        let mut body = String::new();
        for &i in &self.kernel.nodes {
            body += &self.elementwise(i);
        }
        for w in self.stored() {
            body += &self.store(w);
        }
        body
    }

    /// A row kernel's body for one row: per stage, the per-row values it can now compute,
    /// then a sweep over the row computing what the stage's reductions and stores need.
    fn row_body(&self) -> String {
        let nodes = &self.kernel.nodes;
        let inside =
            |x: usize| nodes.contains(&x) && !matches!(self.plan.nodes[x].op, Op::Constant(_));
        // Stage of a node: how many reductions must finish before it can be computed.
        let mut stage: HashMap<usize, usize> = HashMap::new();
        for &i in nodes {
            let before = self.plan.nodes[i]
                .op
                .inputs()
                .iter()
                .filter(|x| inside(x.0))
                .map(|x| stage[&x.0])
                .max()
                .unwrap_or(0);
            let s = match self.plan.nodes[i].op {
                Op::Reduce(..) => before + 1,
                _ => before,
            };
            stage.insert(i, s);
        }
        let last = nodes.iter().map(|i| stage[i]).max().unwrap_or(0);
        let mut body = String::new();
        for s in 0..=last {
            for &i in nodes.iter().filter(|&&i| stage[&i] == s && self.per_row(i)) {
                if let Op::Reduce(..) = self.plan.nodes[i].op {
                    continue; // finished after the previous sweep
                }
                body += &self.elementwise(i);
                body += &self.store_row(i);
            }
            // Reductions finishing after this sweep, and wide values written in it.
            let reductions: Vec<usize> = nodes
                .iter()
                .copied()
                .filter(|&i| matches!(self.plan.nodes[i].op, Op::Reduce(..)) && stage[&i] == s + 1)
                .collect();
            let stores: Vec<usize> = self
                .stored()
                .into_iter()
                .filter(|&w| !self.per_row(w) && stage[&w] == s)
                .collect();
            if reductions.is_empty() && stores.is_empty() {
                continue;
            }
            // The wide values the sweep needs, inputs before users.
            let mut needed: Vec<usize> = Vec::new();
            let mut stack: Vec<usize> = stores.clone();
            for &r in &reductions {
                stack.extend(self.plan.nodes[r].op.inputs().iter().map(|x| x.0));
            }
            while let Some(i) = stack.pop() {
                if inside(i) && !self.per_row(i) && !needed.contains(&i) {
                    needed.push(i);
                    stack.extend(self.plan.nodes[i].op.inputs().iter().map(|x| x.0));
                }
            }
            needed.sort_unstable();
            for &r in &reductions {
                body += &format!("float acc{r} = {};\n", self.identity(r));
            }
            body += &format!(
                "for (long j = threadIdx.x; j < {}L; j += blockDim.x) {{\n",
                self.kernel.width
            );
            for &i in &needed {
                body += &self.elementwise(i);
            }
            for &r in &reductions {
                let Op::Reduce(op, x) = self.plan.nodes[r].op else {
                    unreachable!()
                };
                let v = self.operand(x.0, &self.plan.nodes[x.0].dims(), "j");
                body += &match op {
                    Reduce::Sum => format!("acc{r} = acc{r} + ({v});\n"),
                    Reduce::Max => format!("acc{r} = fmaxf(acc{r}, {v});\n"),
                };
            }
            for &w in &stores {
                body += &self.store(w);
            }
            body += "}\n";
            for &r in &reductions {
                let f = match self.plan.nodes[r].op {
                    Op::Reduce(Reduce::Sum, _) => "SumOp()",
                    _ => "MaxOp()",
                };
                let identity = self.identity(r);
                body += &format!("const float n{r} = block_fold(acc{r}, red, {identity}, {f});\n");
                body += &self.store_row(r);
            }
        }
        body
    }
}

/// CUDA C for plan kernel `k`, named `fused_{k}`: parameters are the buffers it reads (in
/// `Kernel::reads` order), then those it writes (in `Kernel::writes` order).
fn kernel_source(plan: &Plan, k: usize, src: &mut String) {
    let kernel = &plan.kernels[k];
    let gen = Gen::of(plan, kernel);
    let mut params: Vec<String> = (0..kernel.reads.len())
        .map(|p| format!("const float* __restrict__ in{p}"))
        .collect();
    params.extend((0..kernel.writes.len()).map(|o| format!("float* __restrict__ out{o}")));
    params.extend((0..kernel.lead.len()).map(|a| format!("long L{a}")));
    let rows: String = (0..kernel.lead.len()).map(|a| format!(" * L{a}")).collect();
    let rows = format!("(1L{rows})");
    let width = kernel.width;
    let body = if kernel.reduces {
        format!(
            "__shared__ float red[32];\n\
             for (long row = blockIdx.x; row < {rows}; row += gridDim.x) {{\n{}}}\n",
            gen.row_body()
        )
    } else {
        format!(
            "for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < {rows} * {width}L; \
             i += (long)gridDim.x * blockDim.x) {{\n\
             const long row = i / {width}L, j = i % {width}L;\n{}}}\n",
            gen.flat_body()
        )
    };
    let _ = writeln!(
        src,
        "extern \"C\" __global__ void fused_{k}({}) {{\n{body}}}",
        params.join(", ")
    );
}

/// The whole plan's source: the prelude, then each kernel, then each chain (with the
/// weight formats they read).
fn plan_source(plan: &Plan, chains: &[Chain]) -> String {
    let mut src = String::new();
    if !chains.is_empty() {
        src.extend(compile::PRODUCT_FORMATS);
    }
    src += PRELUDE;
    for k in 0..plan.kernels.len() {
        if !plan.kernels[k].products {
            kernel_source(plan, k, &mut src);
        }
    }
    for c in chains {
        chain::source(plan, c, &mut src);
    }
    src
}

/// A plan's generated kernels, loaded (`None` for its kernels of products, which run on
/// the product kernels), and its chains with their functions (one token, a tile).
struct Module {
    functions: Vec<Option<sys::CUfunction>>,
    chains: Vec<(Chain, sys::CUfunction, sys::CUfunction)>,
}

// SAFETY: function handles are driver objects usable from any thread once their context is
// current, which `CudaDevice::bind` ensures before each launch.
unsafe impl Send for Module {}
// SAFETY: as above.
unsafe impl Sync for Module {}

/// Loaded kernels by (device ordinal, source), and by (ordinal, plan fingerprint, weight
/// formats) so that a plan run again finds its kernels without generating their source.
/// Plans that differ only in their number of rows share a source.
#[derive(Default)]
struct Modules {
    by_source: HashMap<(usize, String), Arc<Module>>,
    by_plan: HashMap<PlanKey, Arc<Module>>,
}

type PlanKey = (usize, Vec<u64>, Vec<Option<&'static str>>);

/// Plans remembered at most; past that the map starts over (the sources stay).
const MAX_PLANS: usize = 4096;

fn modules() -> &'static Mutex<Modules> {
    static MODULES: OnceLock<Mutex<Modules>> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

/// `plan`'s module, for weights of `formats` (per weight node, its warp-per-row format).
fn module(
    dev: &CudaDevice,
    plan: &Plan,
    formats: Vec<(usize, Option<&'static str>)>,
) -> Result<Arc<Module>> {
    let plan_key = (
        dev.ordinal,
        plan.fingerprint(),
        formats.iter().map(|f| f.1).collect(),
    );
    if let Some(m) = modules().lock().expect("modules").by_plan.get(&plan_key) {
        return Ok(Arc::clone(m));
    }
    if plan.kernels.iter().all(|k| k.products) {
        let functions = vec![None; plan.kernels.len()];
        let chains = Vec::new();
        return Ok(Arc::new(Module { functions, chains }));
    }
    let format = |node: usize| formats.iter().find(|f| f.0 == node).and_then(|f| f.1);
    let chains = chain::chains(plan, &format);
    let key = (dev.ordinal, plan_source(plan, &chains));
    let known = modules()
        .lock()
        .expect("modules")
        .by_source
        .get(&key)
        .cloned();
    let m = match known {
        Some(m) => m,
        None => {
            let m = load(dev, &key.1, plan, chains)?;
            modules()
                .lock()
                .expect("modules")
                .by_source
                .insert(key, Arc::clone(&m));
            m
        }
    };
    let mut all = modules().lock().expect("modules");
    if all.by_plan.len() >= MAX_PLANS {
        all.by_plan.clear();
    }
    all.by_plan.insert(plan_key, Arc::clone(&m));
    Ok(m)
}

/// Modules generated so far, and the time NVRTC and the driver took to compile and load them.
static GENERATED: Mutex<(usize, Duration)> = Mutex::new((0, Duration::ZERO));

/// Chains queued as one launch so far.
static CHAINED: AtomicU64 = AtomicU64::new(0);

/// See [`CHAINED`].
pub(crate) fn chained() -> u64 {
    CHAINED.load(Ordering::Relaxed)
}

/// See [`GENERATED`].
pub(crate) fn generated() -> (usize, Duration) {
    *GENERATED.lock().expect("generated")
}

/// The options generated kernels compile with (see the module doc).
fn options(arch: (i32, i32)) -> [String; 5] {
    [
        format!("--gpu-architecture=sm_{}{}", arch.0, arch.1),
        "--std=c++17".to_string(),
        "--fmad=false".to_string(),
        "--prec-div=true".to_string(),
        "--prec-sqrt=true".to_string(),
    ]
}

/// Compiles `source` (through the disk cache) and loads the functions `fused_{k}` of
/// `plan`'s generated kernels and those of its `chains`.
fn load(dev: &CudaDevice, source: &str, plan: &Plan, chains: Vec<Chain>) -> Result<Arc<Module>> {
    let start = Instant::now();
    let cubin = compile::cached_compile("graph", source, &options(dev.arch), dev.arch)
        .map_err(|e| dev.err("compiling a graph", e))?;
    dev.bind()?;
    // SAFETY: `cubin` is a complete CUBIN for this device's architecture; the context is
    // current (bound above). The module stays loaded for the life of the process.
    let loaded = unsafe { cu::module::load_data(cubin.as_ptr().cast()) }
        .map_err(|e| dev.err("loading a graph's kernels", e))?;
    let function = |name: String| {
        let name = std::ffi::CString::new(name).expect("no NUL");
        // SAFETY: the module was just loaded in this device's context.
        unsafe { cu::module::get_function(loaded, name) }.map_err(|e| dev.err("a graph kernel", e))
    };
    let functions = (0..plan.kernels.len())
        .map(|k| match plan.kernels[k].products {
            true => Ok(None),
            false => function(format!("fused_{k}")).map(Some),
        })
        .collect::<Result<Vec<_>>>()?;
    let chains = chains
        .into_iter()
        .map(|c| {
            let first = c.first();
            let one = function(format!("chain_{first}_1"))?;
            let tiled = function(format!("chain_{first}_n"))?;
            Ok((c, one, tiled))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut generated = GENERATED.lock().expect("generated");
    generated.0 += 1;
    generated.1 += start.elapsed();
    Ok(Arc::new(Module { functions, chains }))
}

/// Runs `plan` on f32 `inputs` on `dev` and returns its outputs (queued).
pub(crate) fn run_plan(
    dev: &Arc<CudaDevice>,
    plan: &Plan,
    inputs: &[&Array],
) -> Result<Vec<Array>> {
    let weights = plan.weights();
    for (i, node) in plan.nodes.iter().enumerate() {
        if let Op::Input(k) = node.op {
            let a = inputs
                .get(k)
                .ok_or_else(|| Error::Shape(format!("graph input {k} not given")))?;
            let f32_values = a.dtype() == DType::F32 && a.quant().is_none();
            if !weights.contains(&i) && (!f32_values || a.numel() != node.numel()) {
                return Err(Error::Shape(format!(
                    "graph input {k}: {} {:?} for f32 {:?}",
                    a.dtype(),
                    a.shape(),
                    node.shape
                )));
            }
        }
    }
    let formats = weights
        .iter()
        .map(|&w| match plan.nodes[w].op {
            Op::Input(k) => (w, warp_row_format(inputs[k])),
            _ => (w, None),
        })
        .collect();
    let module = module(dev, plan, formats)?;
    let arena = match plan.memory.arena {
        0 => None,
        len => Some(dev.alloc(4 * len)?),
    };
    // Each output in memory of its own (the same node twice shares one array).
    let mut outputs: Vec<Array> = Vec::with_capacity(plan.outputs.len());
    for (o, &node) in plan.outputs.iter().enumerate() {
        let out = match plan.nodes[node].op {
            Op::Input(k) => inputs[k].clone(),
            _ => match plan.outputs[..o].iter().position(|&p| p == node) {
                Some(first) => outputs[first].clone(),
                None => Array::empty_cuda(dev, DType::F32, &plan.nodes[node].shape)?,
            },
        };
        outputs.push(out);
    }
    let address = |node: usize| -> Result<u64> {
        if let Op::Input(k) = plan.nodes[node].op {
            return inputs[k].device_ptr();
        }
        if let Some(o) = plan.outputs.iter().position(|&p| p == node) {
            return outputs[o].device_ptr();
        }
        let b = plan
            .memory
            .of(node)
            .expect("values between kernels have buffers");
        let arena = arena.as_ref().expect("an arena holds them");
        Ok(arena.ptr() + 4 * b.offset as u64)
    };
    dev.bind()?;
    let mut k = 0;
    while k < plan.kernels.len() {
        if let Some((c, one, tiled)) = module.chains.iter().find(|c| c.0.first() == k) {
            let products = product_ptrs(plan, &plan.kernels[c.products], inputs, &address)?;
            if chain::run(dev, plan, c, (*one, *tiled), &products, &address)? {
                CHAINED.fetch_add(1, Ordering::Relaxed);
                k = c.last() + 1;
                continue;
            }
        }
        run_kernel(dev, plan, &module, k, inputs, &address)?;
        k += 1;
    }
    Ok(outputs)
}

/// Queues plan kernel `k` alone.
fn run_kernel(
    dev: &Arc<CudaDevice>,
    plan: &Plan,
    module: &Module,
    k: usize,
    inputs: &[&Array],
    address: &dyn Fn(usize) -> Result<u64>,
) -> Result<()> {
    let kernel = &plan.kernels[k];
    if kernel.products {
        let products = product_ptrs(plan, kernel, inputs, address)?;
        return linear_set_into(dev, &products);
    }
    let (rows, width) = (kernel.rows(), kernel.width);
    if rows * width == 0 {
        return Ok(());
    }
    let mut args = buffer_args(&kernel.reads, &kernel.writes, &kernel.lead, address)?;
    let mut params: Vec<*mut std::ffi::c_void> =
        args.iter_mut().map(|a| (a as *mut u64).cast()).collect();
    let most = 4 * dev.multiprocessors as usize;
    let (blocks, threads) = if kernel.reduces {
        let threads = width.next_multiple_of(32).clamp(32, 256);
        (rows.min(most), threads)
    } else {
        ((rows * width).div_ceil(256).clamp(1, most), 256)
    };
    let name = if kernel.reduces {
        "graph row pass"
    } else {
        "graph flat pass"
    };
    dev.profiled(name, || {
        // SAFETY: `fused_k` takes one pointer per read, then one per write, then the
        // leading axes' sizes (64-bit), as `params` holds; every pointer addresses a live
        // buffer (the inputs, the outputs, or the arena, which goes back to the pool only
        // after the queued kernels, as every pooled buffer does).
        unsafe {
            cu::launch_kernel(
                module.functions[k].expect("generated for a pass"),
                (blocks as u32, 1, 1),
                (threads as u32, 1, 1),
                0,
                dev.stream,
                &mut params,
            )
        }
        .map_err(|e| dev.err("launching a graph kernel", e))
    })
}

/// The leading 64-bit arguments of every generated kernel: the addresses of the buffers
/// it reads, then of those it writes, then the sizes of the domain's leading axes.
fn buffer_args(
    reads: &[usize],
    writes: &[usize],
    lead: &[usize],
    address: &dyn Fn(usize) -> Result<u64>,
) -> Result<Vec<u64>> {
    let mut args: Vec<u64> = reads
        .iter()
        .chain(writes)
        .map(|&n| address(n))
        .collect::<Result<_>>()?;
    args.extend(lead.iter().map(|&l| l as u64));
    Ok(args)
}

/// The operands of a kernel of products of one input.
fn product_ptrs<'a>(
    plan: &Plan,
    kernel: &Kernel,
    inputs: &[&'a Array],
    address: &dyn Fn(usize) -> Result<u64>,
) -> Result<Vec<LinearPtrs<'a>>> {
    kernel
        .steps
        .iter()
        .map(|step| {
            let Op::Product { x, w, bias } = step.op else {
                unreachable!("a product kernel holds products")
            };
            let Op::Input(k) = plan.nodes[w.index()].op else {
                unreachable!("weights are inputs (ops::linear computes them first)")
            };
            let x_node = &plan.nodes[x.index()];
            let k_len = *x_node.dims().last().expect("dims are never empty");
            Ok(LinearPtrs {
                x: address(x.index())?,
                tokens: x_node.numel() / k_len.max(1),
                w: inputs[k],
                bias: bias.map_or(Ok(0), |b| address(b.index()))?,
                y: address(step.node)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{compile as compile_graph, Graph};

    /// A decode step's plans (one row) generate the source its prompt's plans (many rows)
    /// compiled, so capturing a decode step compiles nothing.
    #[test]
    fn one_source_serves_every_number_of_rows() {
        let source = |rows: usize| {
            let mut g = Graph::new();
            let x = g.input(&[rows, 8]);
            let y = g.input(&[rows, 8]);
            let w = g.input(&[8]);
            let sum = g.binary(Binary::Add, x, y).unwrap();
            let normed = g.rms_norm(sum, w, 1e-5).unwrap();
            plan_source(&compile_graph(&g, &[sum, normed]), &[])
        };
        assert_eq!(source(1), source(5));
        assert_eq!(source(1), source(512));
    }

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
        let source = plan_source(&plan, &[]);
        let cubin =
            compile::compile(&source, &options((9, 0))).unwrap_or_else(|e| panic!("{e}\n{source}"));
        assert!(cubin.starts_with(b"\x7fELF"));
    }

    /// A Llama block's plan as the decoder records it: the residual sum and its norm, then
    /// q, k and v (with biases); the next residual sum and norm, then gate and up, SwiGLU,
    /// and down.
    fn block_plan(tokens: usize) -> Plan {
        let (d, f) = (64, 96);
        let mut g = Graph::new();
        let x = g.input(&[tokens, d]);
        let attn = g.input(&[tokens, d]);
        let norm = g.input(&[d]);
        let h = g.binary(Binary::Add, x, attn).unwrap();
        let normed = g.rms_norm(h, norm, 1e-5).unwrap();
        let mut outputs = vec![h];
        for n in [d, 32, 32] {
            let (w, b) = (g.input(&[n, d]), g.input(&[n]));
            outputs.push(g.product(normed, w, Some(b)).unwrap());
        }
        let o = g.input(&[tokens, d]);
        let h2 = g.binary(Binary::Add, h, o).unwrap();
        let normed2 = g.rms_norm(h2, norm, 1e-5).unwrap();
        let (wg, wu, wd) = (g.input(&[f, d]), g.input(&[f, d]), g.input(&[d, f]));
        let gate = g.product(normed2, wg, None).unwrap();
        let up = g.product(normed2, wu, None).unwrap();
        let act = g.unary(Unary::Silu, gate);
        let mixed = g.binary(Binary::Mul, act, up).unwrap();
        let down = g.product(mixed, wd, None).unwrap();
        let out = g.binary(Binary::Add, h2, down).unwrap();
        outputs.push(out);
        compile_graph(&g, &outputs)
    }

    /// The block's norms run inside the products after them, SwiGLU after gate and up, and
    /// the last residual sum after down: three chains, which compile for Hopper.
    #[test]
    fn a_blocks_norms_and_swiglu_chain_with_its_products() {
        let plan = block_plan(3);
        let chains = chain::chains(&plan, &|_| Some("Q4_1"));
        let shapes: Vec<(bool, bool)> = chains
            .iter()
            .map(|c| (c.prologue.is_some(), c.epilogue.is_some()))
            .collect();
        assert_eq!(
            shapes,
            [(true, false), (true, true), (false, true)],
            "{plan}"
        );
        // Formats that stream (MLX affine, MXFP4) make no chains.
        assert!(chain::chains(&plan, &|_| None).is_empty());
        let source = plan_source(&plan, &chains);
        assert_eq!(
            source,
            plan_source(&block_plan(1), &chains),
            "one source for any tokens"
        );
        if let Err(why) = compile::nvrtc_ready() {
            eprintln!("SKIPPED the sm_90 compile of a_blocks_norms_and_swiglu_chain: {why}");
            return;
        }
        let cubin =
            compile::compile(&source, &options((9, 0))).unwrap_or_else(|e| panic!("{e}\n{source}"));
        assert!(cubin.starts_with(b"\x7fELF"));
    }
}
