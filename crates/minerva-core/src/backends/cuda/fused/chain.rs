//! Product chains: a kernel of products generated together with the row pass before it
//! (the norm of the products' input, with the residual sum it follows) and the flat pass
//! after it (SwiGLU of gate and up, a residual add), so that a Llama layer's norm and q/k/v
//! products, or its norm, gate/up products and SwiGLU, are one launch.
//!
//! A block first computes the prologue for its tile of tokens into shared memory (the
//! block of the first row column also stores what the rest of the plan reads of it), then
//! each warp computes one row of every product (the warp-per-row kernels' `row_dots`), and
//! the epilogue at that row. The values are the bits the three kernels give apart: the
//! prologue folds over [`THREADS`] threads as the row pass does, each row is summed as the
//! product kernels sum it, and every expression is the same.

use std::ffi::c_void;
use std::fmt::Write;
use std::sync::Arc;

use cudarc::driver::{result as cu, sys};

use super::super::ops::{warp_rows_weight, LinearPtrs, WeightArg};
use super::super::CudaDevice;
use super::{buffer_args, Gen};
use crate::graph::{Op, Plan};
use crate::Result;

/// Threads of a chain's block: the row pass's (so the prologue folds alike), 8 warps.
const THREADS: usize = 256;
const WARPS: usize = THREADS / 32;
/// f32 values a block's shared token tile may hold (48 KiB of static shared memory, less
/// the fold's scratch).
const TILE_VALUES: usize = 12 * 1024 - 64;

/// Up to three kernels of a plan that run as one launch.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    pub prologue: Option<usize>,
    pub products: usize,
    pub epilogue: Option<usize>,
    /// Each product's node, weight format (a `products.cuh` type) and bias.
    dots: Vec<(usize, &'static str, Option<usize>)>,
    /// The products' input and its width.
    x: usize,
    k: usize,
    /// Buffers read (parameters `in{p}`) and nodes stored (`out{o}`).
    reads: Vec<usize>,
    writes: Vec<usize>,
    /// Tokens a block computes when there are several.
    tile: usize,
}

impl Chain {
    pub fn first(&self) -> usize {
        self.prologue.unwrap_or(self.products)
    }

    pub fn last(&self) -> usize {
        self.epilogue.unwrap_or(self.products)
    }

    /// Outputs per product (all equal where there is an epilogue).
    fn widths<'a>(&'a self, plan: &'a Plan) -> impl Iterator<Item = usize> + 'a {
        self.dots
            .iter()
            .map(|&(p, ..)| *plan.nodes[p].dims().last().expect("dims"))
    }

    /// Blocks along the rows.
    fn blocks(&self, plan: &Plan) -> usize {
        match self.epilogue {
            Some(_) => self.widths(plan).max().unwrap_or(0).div_ceil(WARPS),
            None => self.widths(plan).map(|n| n.div_ceil(WARPS)).sum(),
        }
    }

    /// The profiler's name for it.
    pub fn name(&self) -> &'static str {
        match (self.prologue, self.epilogue) {
            (Some(_), Some(_)) => "graph chain: row pass + products + flat pass",
            (Some(_), None) => "graph chain: row pass + products",
            _ => "graph chain: products + flat pass",
        }
    }
}

/// The chains of `plan`, given each weight node's format where its products can run on the
/// warp-per-row kernels. A kernel of products chains with the row pass before it when that
/// pass computes the products' input over the same tokens, and with the flat pass after it
/// when that pass is over the products' outputs (all of one width) and reads nothing the
/// prologue computes (only the first blocks store it).
pub(super) fn chains(plan: &Plan, format: &dyn Fn(usize) -> Option<&'static str>) -> Vec<Chain> {
    let kernels = &plan.kernels;
    let mut read_by: Vec<Vec<usize>> = vec![Vec::new(); plan.nodes.len()];
    for (k, kernel) in kernels.iter().enumerate() {
        for &r in &kernel.reads {
            read_by[r].push(k);
        }
    }
    let mut found: Vec<Chain> = Vec::new();
    for (q, kq) in kernels.iter().enumerate() {
        if !kq.products {
            continue;
        }
        let (mut dots, mut weights) = (Vec::new(), Vec::new());
        let mut x = 0;
        for step in &kq.steps {
            let Op::Product { x: input, w, bias } = step.op else {
                unreachable!("a product kernel holds products")
            };
            x = input.index();
            let Some(f) = format(w.index()) else { break };
            dots.push((step.node, f, bias.map(|b| b.index())));
            weights.push(w.index());
        }
        if dots.len() != kq.steps.len() {
            continue;
        }
        let k = *plan.nodes[x].dims().last().expect("dims");
        let lead = &kq.lead;
        let taken = found.last().map_or(0, |c: &Chain| c.last() + 1);
        let prologue = q.checked_sub(1).filter(|&p| {
            let kp = &kernels[p];
            p >= taken
                && !kp.products
                && kp.reduces
                && &kp.lead == lead
                && kp.width == k
                && kp.nodes.contains(&x)
                && k <= TILE_VALUES
                && dots
                    .iter()
                    .all(|&(.., b)| b.is_none_or(|b| !kp.nodes.contains(&b)))
        });
        let widths: Vec<usize> = dots
            .iter()
            .map(|&(p, ..)| *plan.nodes[p].dims().last().expect("dims"))
            .collect();
        let epilogue = Some(q + 1).filter(|&e| {
            let Some(ke) = kernels.get(e) else {
                return false;
            };
            !ke.products
                && !ke.reduces
                && &ke.lead == lead
                && widths.iter().all(|&n| n == ke.width)
                && prologue.is_none_or(|p| !ke.reads.iter().any(|r| kernels[p].nodes.contains(r)))
        });
        if prologue.is_none() && epilogue.is_none() {
            continue;
        }
        let members: Vec<usize> = prologue.into_iter().chain([q]).chain(epilogue).collect();
        let inside = |n: usize| members.iter().any(|&m| kernels[m].nodes.contains(&n));
        let mut reads: Vec<usize> = Vec::new();
        for &m in &members {
            for &r in &kernels[m].reads {
                if !inside(r) && !weights.contains(&r) && !reads.contains(&r) {
                    reads.push(r);
                }
            }
        }
        let needed = |n: &usize| {
            plan.outputs.contains(n) || read_by[*n].iter().any(|k| !members.contains(k))
        };
        let writes = members
            .iter()
            .flat_map(|&m| kernels[m].nodes.iter().copied())
            .filter(|n| needed(n) && kernels.iter().any(|k| k.writes.contains(n)))
            .collect();
        let tile = match prologue {
            Some(_) => (TILE_VALUES / k).min(8),
            None => 8,
        };
        found.push(Chain {
            prologue,
            products: q,
            epilogue,
            dots,
            x,
            k,
            reads,
            writes,
            tile,
        });
    }
    found
}

/// CUDA C for chain `c`: `chain_{first}_1` for one token and `chain_{first}_n` for tiles
/// of `c.tile` tokens. Parameters: the buffers it reads, those it writes, the token axes'
/// sizes, one `Weight` per product, and the number of tokens.
pub(super) fn source(plan: &Plan, c: &Chain, src: &mut String) {
    let kq = &plan.kernels[c.products];
    let mut params: Vec<String> = (0..c.reads.len())
        .map(|p| format!("const float* __restrict__ in{p}"))
        .collect();
    params.extend((0..c.writes.len()).map(|o| format!("float* __restrict__ out{o}")));
    params.extend((0..kq.lead.len()).map(|a| format!("long L{a}")));
    params.extend((0..c.dots.len()).map(|i| format!("Weight w{i}")));
    params.push("int tokens".to_string());
    let params = params.join(", ");
    for (suffix, tile) in [("1", 1), ("n", c.tile)] {
        let body = body(plan, c, tile);
        let _ = writeln!(
            src,
            "extern \"C\" __global__ void __launch_bounds__({THREADS}) chain_{}_{suffix}({params}) {{\n{body}}}",
            c.first()
        );
    }
}

/// A chain kernel's body for `tile` tokens a block.
fn body(plan: &Plan, c: &Chain, tile: usize) -> String {
    let k = c.k;
    let mut body = format!(
        "const int t0 = blockIdx.y * {tile}, nt = min({tile}, tokens - t0);\n\
         const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;\n"
    );
    match c.prologue {
        Some(p) => {
            let gen = Gen {
                plan,
                kernel: &plan.kernels[p],
                reads: &c.reads,
                writes: &c.writes,
                registers: &[],
                staged: Some(c.x),
                guard: "blockIdx.x == 0",
            };
            let _ = write!(
                body,
                "__shared__ float red[32];\n\
                 __shared__ __align__(16) float xs[{}];\n\
                 for (long row = t0; row < t0 + nt; row++) {{\n{}}}\n\
                 __syncthreads();\n\
                 const float* xt = xs;\n",
                tile * k,
                gen.row_body()
            );
        }
        None => {
            let xr = c.reads.iter().position(|&r| r == c.x).expect("x is read");
            let _ = writeln!(body, "const float* xt = in{xr} + (long)t0 * {k}L;");
        }
    }
    // Row r of product i, for every token of the tile, into a{i}[t].
    let dots = |i: usize, f: &str| {
        format!(
            "float a{i}[{tile}];\n\
             row_dots<{f}, {tile}>(w{i}, w{i}.codes + (i64)r * w{i}.row_bytes, \
             (i64)r * ({k} / w{i}.group), xt, nt, a{i});\n"
        )
    };
    // Product i's value at (row, j = r), and its store where the plan reads it.
    let value = |i: usize, node: usize, bias: Option<usize>, n: usize| {
        // Without a bias the kernels add 0.0f too, so a -0.0 sum comes out alike.
        let b = bias.map_or("0.0f".to_string(), |b| {
            format!(
                "in{}[r]",
                c.reads.iter().position(|&r| r == b).expect("bias read")
            )
        });
        let mut code = format!("const float n{node} = a{i}[t] + {b};\n");
        if let Some(o) = c.writes.iter().position(|&w| w == node) {
            let _ = writeln!(code, "out{o}[row * {n}L + j] = n{node};");
        }
        code
    };
    let each_token = "if (lane == 0) for (int t = 0; t < nt; t++) {\n\
                      const long row = t0 + t, j = r;\n";
    match c.epilogue {
        Some(e) => {
            let registers: Vec<usize> = c.dots.iter().map(|&(p, ..)| p).collect();
            let gen = Gen {
                plan,
                kernel: &plan.kernels[e],
                reads: &c.reads,
                writes: &c.writes,
                registers: &registers,
                staged: None,
                guard: "",
            };
            let n = plan.kernels[e].width;
            let _ = writeln!(
                body,
                "const int r = blockIdx.x * {WARPS} + warp;\nif (r >= {n}) return;"
            );
            for (i, &(_, f, _)) in c.dots.iter().enumerate() {
                body += &dots(i, f);
            }
            body += each_token;
            for (i, &(node, _, bias)) in c.dots.iter().enumerate() {
                body += &value(i, node, bias, n);
            }
            body += &gen.flat_body();
            body += "}\n";
        }
        None => {
            body += "int bx = blockIdx.x;\n";
            for (i, (&(node, f, bias), n)) in c.dots.iter().zip(c.widths(plan)).enumerate() {
                let blocks = n.div_ceil(WARPS);
                let _ = writeln!(
                    body,
                    "if (bx < {blocks}) {{\nconst int r = bx * {WARPS} + warp;\nif (r >= {n}) return;"
                );
                body += &dots(i, f);
                body += each_token;
                body += &value(i, node, bias, n);
                let _ = writeln!(body, "}}\nreturn;\n}}\nbx -= {blocks};");
            }
        }
    }
    body
}

/// Queues chain `c` (functions `one` and `tiled`, see [`source`]) and says so, or says it
/// cannot run it here (a product that takes other kernels at this number of tokens).
pub(super) fn run(
    dev: &Arc<CudaDevice>,
    plan: &Plan,
    c: &Chain,
    functions: (sys::CUfunction, sys::CUfunction),
    products: &[LinearPtrs<'_>],
    address: &dyn Fn(usize) -> Result<u64>,
) -> Result<bool> {
    let mut weights: Vec<WeightArg> = Vec::with_capacity(products.len());
    for p in products {
        match warp_rows_weight(dev, p)? {
            Some(w) => weights.push(w),
            None => return Ok(false),
        }
    }
    let tokens = products.first().map_or(0, |p| p.tokens);
    if tokens == 0 {
        return Ok(true);
    }
    let lead = &plan.kernels[c.products].lead;
    let mut buffers = buffer_args(&c.reads, &c.writes, lead, address)?;
    let mut tokens_arg = tokens as i32;
    let mut params: Vec<*mut c_void> = buffers.iter_mut().map(|a| (a as *mut u64).cast()).collect();
    params.extend(weights.iter_mut().map(|w| (w as *mut WeightArg).cast()));
    params.push((&mut tokens_arg as *mut i32).cast());
    let (function, tile) = match tokens {
        1 => (functions.0, 1),
        _ => (functions.1, c.tile),
    };
    let grid = (c.blocks(plan) as u32, tokens.div_ceil(tile) as u32, 1);
    dev.profiled(c.name(), || {
        // SAFETY: the chain kernel takes one pointer per read and per write, the token
        // axes' sizes (64-bit), a `Weight` per product (`WeightArg` mirrors it) and the
        // tokens (32-bit), as `params` holds in that order; every pointer addresses a live
        // buffer (inputs, outputs, the arena), and `buffers`, `weights` and `tokens_arg`
        // outlive the call.
        unsafe {
            cu::launch_kernel(
                function,
                grid,
                (THREADS as u32, 1, 1),
                0,
                dev.stream,
                &mut params,
            )
        }
        .map_err(|e| dev.err("launching a graph chain", e))
    })?;
    Ok(true)
}
