//! Compiled graphs on the CPU (`crate::graph`): each fused kernel is one pass over memory,
//! a row of its result at a time, its inlined nodes computed into row-sized scratch that
//! stays in cache. [`run_unfused`] computes node by node over whole arrays instead: the
//! reference the fused passes must match bit for bit (same f32 operations per value, sums
//! from the first value to the last).

use crate::graph::{Binary, Buffer, Graph, Kernel, Node, NodeId, Op, Plan, Reduce, Unary};
use crate::{Error, Result};

fn unary(op: Unary, x: f32) -> f32 {
    match op {
        Unary::Neg => -x,
        Unary::Exp => x.exp(),
        Unary::Recip => 1.0 / x,
        Unary::Sqrt => x.sqrt(),
        Unary::Rsqrt => 1.0 / x.sqrt(),
        Unary::Square => x * x,
        Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Unary::Silu => x / (1.0 + (-x).exp()),
        Unary::Tanh => x.tanh(),
    }
}

fn binary(op: Binary, a: f32, b: f32) -> f32 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Max => a.max(b),
        Binary::Min => a.min(b),
    }
}

fn reduce(op: Reduce, values: &[f32]) -> f32 {
    match op {
        Reduce::Sum => values.iter().fold(0.0, |s, &v| s + v),
        Reduce::Max => values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
    }
}

/// Where position `index` (of an array of `shape`) reads in an array of `from` that
/// broadcasts to `shape`: the flat offset.
fn broadcast_offset(index: &[usize], shape: &[usize], from: &[usize]) -> usize {
    let pad = shape.len() - from.len();
    let mut offset = 0;
    for (d, &size) in from.iter().enumerate() {
        let i = if size == 1 { 0 } else { index[pad + d] };
        offset = offset * size + i;
    }
    offset
}

/// The multi-index of flat position `flat` in `shape`.
fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}

/// The values of `outputs`, each node computed over its whole shape (`inputs[i]` holds input
/// i's values, row-major).
pub fn run_unfused(graph: &Graph, outputs: &[NodeId], inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        let shape = node.dims();
        let n = node.numel().max(1);
        let read = |id: NodeId, index: &[usize]| {
            let from = graph.node(id).dims();
            values[id.0][broadcast_offset(index, &shape, &from)]
        };
        let out: Vec<f32> = match node.op {
            Op::Input(i) => input(inputs, i, node)?.to_vec(),
            Op::Constant(v) => vec![v],
            Op::Unary(op, x) => values[x.0].iter().map(|&v| unary(op, v)).collect(),
            Op::Binary(op, a, b) => (0..n)
                .map(|f| {
                    let index = unflatten(f, &shape);
                    binary(op, read(a, &index), read(b, &index))
                })
                .collect(),
            Op::Reduce(op, x) => values[x.0]
                .chunks(*graph.shape(x).last().expect("not a scalar"))
                .map(|row| reduce(op, row))
                .collect(),
        };
        values.push(out);
    }
    Ok(outputs.iter().map(|o| values[o.0].clone()).collect())
}

fn input<'a>(inputs: &[&'a [f32]], i: usize, node: &Node) -> Result<&'a [f32]> {
    let values = inputs
        .get(i)
        .ok_or_else(|| Error::Shape(format!("graph input {i} not given")))?;
    if values.len() != node.numel() {
        return Err(Error::Shape(format!(
            "graph input {i}: {} values for shape {:?}",
            values.len(),
            node.shape
        )));
    }
    Ok(values)
}

/// Where a kernel finds a node's values.
#[derive(Clone, Copy)]
enum Place {
    Input(usize),
    /// The first of the plan's outputs that is this node.
    Output(usize),
    Arena(Buffer),
}

impl Place {
    fn of(plan: &Plan, node: usize) -> Place {
        match plan.nodes[node].op {
            Op::Input(i) => Place::Input(i),
            _ => match plan.outputs.iter().position(|&o| o == node) {
                Some(o) => Place::Output(o),
                None => Place::Arena(*plan.memory.of(node).expect("values between kernels")),
            },
        }
    }
}

/// Runs `plan` on `inputs` and returns its outputs. With `poison`, every buffer is filled
/// with NaN once its last reader has run, so a plan that reused live memory would show.
pub fn run_plan(plan: &Plan, inputs: &[&[f32]], poison: bool) -> Result<Vec<Vec<f32>>> {
    let mut outputs: Vec<Vec<f32>> = plan
        .outputs
        .iter()
        .map(|&o| vec![0.0; plan.nodes[o].numel()])
        .collect();
    let mut slices: Vec<&mut [f32]> = outputs.iter_mut().map(Vec::as_mut_slice).collect();
    run_plan_into(plan, inputs, &mut slices, poison)?;
    Ok(outputs)
}

/// [`run_plan`] into `outputs` (one slice per plan output, of its size).
pub fn run_plan_into(
    plan: &Plan,
    inputs: &[&[f32]],
    outputs: &mut [&mut [f32]],
    poison: bool,
) -> Result<()> {
    for node in &plan.nodes {
        if let Op::Input(k) = node.op {
            input(inputs, k, node)?;
        }
    }
    for (o, &node) in plan.outputs.iter().enumerate() {
        if outputs.get(o).map(|v| v.len()) != Some(plan.nodes[node].numel()) {
            return Err(Error::Shape(format!(
                "graph output {o}: no slice of {} values",
                plan.nodes[node].numel()
            )));
        }
    }
    let mut arena = vec![0.0f32; plan.memory.arena];
    for (k, kernel) in plan.kernels.iter().enumerate() {
        let places: Vec<Place> = kernel.reads.iter().map(|&r| Place::of(plan, r)).collect();
        let targets: Vec<Place> = kernel.writes.iter().map(|&w| Place::of(plan, w)).collect();
        // Arena ranges written must not meet each other or any range read.
        let written: Vec<Buffer> = targets
            .iter()
            .filter_map(|t| match t {
                Place::Arena(b) => Some(*b),
                _ => None,
            })
            .collect();
        for (i, w) in written.iter().enumerate() {
            let read = places.iter().filter_map(|p| match p {
                Place::Arena(b) => Some(b),
                _ => None,
            });
            if written[..i].iter().chain(read).any(|b| b.overlaps(w)) {
                return Err(Error::Device(format!(
                    "graph memory plan: kernel {k} writes over a buffer it uses"
                )));
            }
        }
        let arena_ptr = arena.as_mut_ptr();
        let sources: Vec<(usize, &[f32])> = kernel
            .reads
            .iter()
            .zip(&places)
            .map(|(&r, place)| {
                let values: &[f32] = match *place {
                    Place::Input(i) => inputs[i],
                    Place::Output(o) => {
                        // SAFETY: output `o` is a node an earlier kernel wrote; this kernel
                        // writes only its own nodes, so this vector is not written while
                        // the slice lives.
                        unsafe { std::slice::from_raw_parts(outputs[o].as_ptr(), outputs[o].len()) }
                    }
                    // SAFETY: `b` lies inside the arena (the planner sized it to hold every
                    // buffer) and no range written while this slice lives overlaps it
                    // (checked above).
                    Place::Arena(b) => unsafe {
                        std::slice::from_raw_parts(arena_ptr.add(b.offset), b.len)
                    },
                };
                (r, values)
            })
            .collect();
        let mut dsts: Vec<(usize, &mut [f32])> = kernel
            .writes
            .iter()
            .zip(&targets)
            .map(|(&w, target)| {
                let values: &mut [f32] = match *target {
                    Place::Input(_) => unreachable!("kernels never write inputs"),
                    // SAFETY: each written node is a distinct output vector, read by no
                    // kernel before this one finishes.
                    Place::Output(o) => unsafe {
                        std::slice::from_raw_parts_mut(outputs[o].as_mut_ptr(), outputs[o].len())
                    },
                    // SAFETY: inside the arena, and overlapping no other range this kernel
                    // reads or writes (checked above).
                    Place::Arena(b) => unsafe {
                        std::slice::from_raw_parts_mut(arena_ptr.add(b.offset), b.len)
                    },
                };
                (w, values)
            })
            .collect();
        run_kernel(plan, kernel, &sources, &mut dsts);
        if poison {
            for b in plan.memory.buffers.iter().filter(|b| b.last == k) {
                arena[b.offset..b.offset + b.len].fill(f32::NAN);
            }
        }
    }
    // An output that is an input, or the same node as an earlier output, is a copy.
    for (o, &node) in plan.outputs.iter().enumerate() {
        match Place::of(plan, node) {
            Place::Input(i) => outputs[o].copy_from_slice(inputs[i]),
            Place::Output(first) if first != o => {
                let (before, rest) = outputs.split_at_mut(o);
                rest[0].copy_from_slice(before[first]);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where a fused node reads an operand.
enum Operand<'a> {
    /// Another fused node's row (`slot` in the scratch).
    Fused(usize),
    Constant(f32),
    /// A buffer of this shape (as evaluated).
    Buffer {
        values: &'a [f32],
        from: Vec<usize>,
    },
}

/// An operand's values along one row: `at(j)`.
enum RowOperand<'a> {
    Fused(usize),
    Constant(f32),
    Slice {
        values: &'a [f32],
        base: usize,
        stride: usize,
    },
}

impl RowOperand<'_> {
    fn at(&self, scratch: &[Vec<f32>], j: usize) -> f32 {
        match *self {
            RowOperand::Fused(t) => {
                let v = &scratch[t];
                v[if v.len() == 1 { 0 } else { j }]
            }
            RowOperand::Constant(c) => c,
            RowOperand::Slice {
                values,
                base,
                stride,
            } => values[base + j * stride],
        }
    }
}

/// One fused kernel, a row of its domain at a time: each node's values along the row into
/// row scratch, then the written ones out.
fn run_kernel(
    plan: &Plan,
    kernel: &Kernel,
    sources: &[(usize, &[f32])],
    dsts: &mut [(usize, &mut [f32])],
) {
    let fused = &kernel.nodes;
    let slot = |node: usize| fused.iter().position(|&f| f == node);
    // Each fused node's operands, found once.
    let operands: Vec<Vec<Operand>> = fused
        .iter()
        .map(|&i| {
            let operand = |id: NodeId| match (slot(id.0), plan.nodes[id.0].op) {
                (Some(t), _) => Operand::Fused(t),
                (None, Op::Constant(c)) => Operand::Constant(c),
                (None, _) => Operand::Buffer {
                    values: sources.iter().find(|(r, _)| *r == id.0).expect("read").1,
                    from: plan.nodes[id.0].dims(),
                },
            };
            plan.nodes[i].op.inputs().into_iter().map(operand).collect()
        })
        .collect();
    // Row scratch per fused node (its last axis).
    let mut scratch: Vec<Vec<f32>> = fused
        .iter()
        .map(|&i| vec![0.0; *plan.nodes[i].dims().last().unwrap()])
        .collect();
    let written: Vec<usize> = dsts
        .iter()
        .map(|(w, _)| slot(*w).expect("a kernel writes its own nodes"))
        .collect();
    for row in 0..kernel.rows() {
        for (s, &i) in fused.iter().enumerate() {
            let node = &plan.nodes[i];
            // A reduction reads its operand over the operand's own last axis.
            let shape = match node.op {
                Op::Reduce(_, x) => plan.nodes[x.0].dims(),
                _ => node.dims(),
            };
            let mut index = unflatten(row, &shape[..shape.len() - 1]);
            index.push(0);
            let row_operands: Vec<RowOperand> = operands[s]
                .iter()
                .map(|o| match o {
                    Operand::Fused(t) => RowOperand::Fused(*t),
                    Operand::Constant(c) => RowOperand::Constant(*c),
                    Operand::Buffer { values, from } => RowOperand::Slice {
                        values,
                        base: broadcast_offset(&index, &shape, from),
                        stride: usize::from(*from.last().unwrap() != 1),
                    },
                })
                .collect();
            let mut out = std::mem::take(&mut scratch[s]);
            match node.op {
                Op::Constant(c) => out.fill(c),
                Op::Input(_) => unreachable!("inputs are read, never fused"),
                Op::Unary(op, _) => {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = unary(op, row_operands[0].at(&scratch, j));
                    }
                }
                Op::Binary(op, _, _) => {
                    let (a, b) = (&row_operands[0], &row_operands[1]);
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = binary(op, a.at(&scratch, j), b.at(&scratch, j));
                    }
                }
                Op::Reduce(op, _) => {
                    let x = &row_operands[0];
                    let values: Vec<f32> = (0..shape[shape.len() - 1])
                        .map(|j| x.at(&scratch, j))
                        .collect();
                    out[0] = reduce(op, &values);
                }
            }
            scratch[s] = out;
        }
        for ((_, dst), &s) in dsts.iter_mut().zip(&written) {
            let values = &scratch[s];
            let w = values.len();
            dst[row * w..(row + 1) * w].copy_from_slice(values);
        }
    }
}
