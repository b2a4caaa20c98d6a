//! Compiled graphs on the CPU (`crate::graph`): each fused kernel is one pass over memory,
//! a row of its result at a time, its inlined nodes computed into row-sized scratch that
//! stays in cache. [`run_unfused`] computes node by node over whole arrays instead: the
//! reference the fused passes must match bit for bit (same f32 operations per value, sums
//! from the first value to the last).

use super::linear::linear_into;
use crate::graph::{Binary, Buffer, Graph, Kernel, Node, NodeId, Op, Plan, Reduce, Source, Unary};
use crate::{Array, Error, Result};

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
fn unflatten(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    unflatten_into(flat, shape, &mut index);
    index
}

/// [`unflatten`] into `index` (of `shape`'s length).
fn unflatten_into(mut flat: usize, shape: &[usize], index: &mut [usize]) {
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
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
            Op::Product { .. } => {
                return Err(Error::Unsupported(
                    "node-by-node evaluation of products (their weights are arrays)".into(),
                ))
            }
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
    run_plan_into(plan, inputs, &[], &mut slices, poison)?;
    Ok(outputs)
}

/// [`run_plan`] into `outputs` (one slice per plan output, of its size). Products take
/// their weights from `arrays` (input `i` is `arrays[i]`; its slice in `inputs` is unused).
pub fn run_plan_into(
    plan: &Plan,
    inputs: &[&[f32]],
    arrays: &[&Array],
    outputs: &mut [&mut [f32]],
    poison: bool,
) -> Result<()> {
    let weights = plan.weights();
    for (i, node) in plan.nodes.iter().enumerate() {
        if let Op::Input(k) = node.op {
            if weights.contains(&i) {
                arrays
                    .get(k)
                    .ok_or_else(|| Error::Shape(format!("graph input {k}: no weight array")))?;
            } else {
                input(inputs, k, node)?;
            }
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
        let sources: Vec<&[f32]> = places
            .iter()
            .map(|place| {
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
                values
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
        if kernel.products {
            run_products(plan, kernel, &sources, arrays, &mut dsts)?;
        } else {
            run_kernel(kernel, &sources, &mut dsts);
        }
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

/// A kernel of products of one input: all of them at once, their rows shared among the
/// threads (no thread waits for one product's stragglers before the next starts).
fn run_products(
    plan: &Plan,
    kernel: &Kernel,
    sources: &[&[f32]],
    arrays: &[&Array],
    dsts: &mut [(usize, &mut [f32])],
) -> Result<()> {
    let read = |s: &Source| match s {
        Source::Read { read, .. } => *read,
        _ => unreachable!("a product's operands are buffers"),
    };
    let mut jobs = Vec::with_capacity(kernel.steps.len());
    for (step, (node, out)) in kernel.steps.iter().zip(dsts.iter_mut()) {
        debug_assert_eq!(step.node, *node, "a product kernel writes every product");
        let w = kernel.reads[read(&step.sources[1])];
        let Op::Input(k) = plan.nodes[w].op else {
            unreachable!("weights are inputs (ops::linear computes them first)")
        };
        let x = sources[read(&step.sources[0])];
        let bias = step.sources.get(2).map(|b| sources[read(b)]);
        jobs.push((x, arrays[k], bias, &mut **out));
    }
    if let [(x, w, bias, out)] = &mut jobs[..] {
        return linear_into(x, w, *bias, out);
    }
    let mut results: Vec<Result<()>> = (0..jobs.len()).map(|_| Ok(())).collect();
    rayon::scope(|s| {
        for ((x, w, bias, out), result) in jobs.into_iter().zip(&mut results) {
            s.spawn(move |_| *result = linear_into(x, w, bias, out));
        }
    });
    results.into_iter().collect()
}

/// An operand's values along one row: a row of them, or one value for the whole row.
#[derive(Clone, Copy)]
enum Row<'a> {
    Values(&'a [f32]),
    Scalar(f32),
}

impl<'a> Row<'a> {
    /// Row scratch as an operand (one value stands for the row).
    fn of(values: &'a [f32]) -> Row<'a> {
        match values {
            [v] => Row::Scalar(*v),
            _ => Row::Values(values),
        }
    }
}

/// `out[j] = f(x[j])`, one tight loop per case so that the compiler vectorizes it.
fn map1(out: &mut [f32], x: Row, f: impl Fn(f32) -> f32) {
    match x {
        Row::Values(x) => out.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v)),
        Row::Scalar(v) => out.fill(f(v)),
    }
}

/// `out[j] = f(a[j], b[j])`, likewise.
fn map2(out: &mut [f32], a: Row, b: Row, f: impl Fn(f32, f32) -> f32) {
    match (a, b) {
        (Row::Values(a), Row::Values(b)) => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
        (Row::Values(a), Row::Scalar(y)) => out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x, y)),
        (Row::Scalar(x), Row::Values(b)) => out.iter_mut().zip(b).for_each(|(o, &y)| *o = f(x, y)),
        (Row::Scalar(x), Row::Scalar(y)) => out.fill(f(x, y)),
    }
}

fn unary_row(op: Unary, x: Row, out: &mut [f32]) {
    match op {
        Unary::Neg => map1(out, x, |v| unary(Unary::Neg, v)),
        Unary::Exp => map1(out, x, |v| unary(Unary::Exp, v)),
        Unary::Recip => map1(out, x, |v| unary(Unary::Recip, v)),
        Unary::Sqrt => map1(out, x, |v| unary(Unary::Sqrt, v)),
        Unary::Rsqrt => map1(out, x, |v| unary(Unary::Rsqrt, v)),
        Unary::Square => map1(out, x, |v| unary(Unary::Square, v)),
        Unary::Sigmoid => map1(out, x, |v| unary(Unary::Sigmoid, v)),
        Unary::Silu => map1(out, x, |v| unary(Unary::Silu, v)),
        Unary::Tanh => map1(out, x, |v| unary(Unary::Tanh, v)),
    }
}

fn binary_row(op: Binary, a: Row, b: Row, out: &mut [f32]) {
    match op {
        Binary::Add => map2(out, a, b, |x, y| binary(Binary::Add, x, y)),
        Binary::Sub => map2(out, a, b, |x, y| binary(Binary::Sub, x, y)),
        Binary::Mul => map2(out, a, b, |x, y| binary(Binary::Mul, x, y)),
        Binary::Div => map2(out, a, b, |x, y| binary(Binary::Div, x, y)),
        Binary::Max => map2(out, a, b, |x, y| binary(Binary::Max, x, y)),
        Binary::Min => map2(out, a, b, |x, y| binary(Binary::Min, x, y)),
    }
}

/// Operand `o`'s values along the row at `index` of `shape`: fused nodes' rows are in
/// `scratch` at `spans[n]`, buffers in `sources`.
fn operand_row<'a>(
    o: &Source,
    scratch: &'a [f32],
    spans: &[(usize, usize)],
    sources: &[&'a [f32]],
    index: &[usize],
    shape: &[usize],
) -> Row<'a> {
    match o {
        Source::Fused(t) => {
            let (start, len) = spans[*t];
            Row::of(&scratch[start..start + len])
        }
        Source::Constant(c) => Row::Scalar(*c),
        Source::Read { read, dims } => {
            let values = sources[*read];
            let base = broadcast_offset(index, shape, dims);
            match *dims.last().unwrap() {
                1 => Row::Scalar(values[base]),
                _ => Row::Values(&values[base..base + shape[shape.len() - 1]]),
            }
        }
    }
}

/// One fused kernel, a row of its domain at a time: each node's values along the row into
/// row scratch, then the written ones out. `sources` are its reads' values.
fn run_kernel(kernel: &Kernel, sources: &[&[f32]], dsts: &mut [(usize, &mut [f32])]) {
    let steps = &kernel.steps;
    let mut spans = Vec::with_capacity(steps.len());
    let mut end = 0;
    for step in steps {
        spans.push((end, step.len));
        end += step.len;
    }
    let mut scratch = vec![0.0f32; end];
    let written: Vec<usize> = dsts
        .iter()
        .map(|(w, _)| {
            steps
                .iter()
                .position(|s| s.node == *w)
                .expect("a kernel writes its own nodes")
        })
        .collect();
    let mut index = vec![0; kernel.lead.len() + 1];
    for row in 0..kernel.rows() {
        for (step, &(start, len)) in steps.iter().zip(&spans) {
            let shape = &step.dims;
            let width = shape[shape.len() - 1];
            // The row's multi-index over the node's leading axes (which end like the
            // kernel's), then column 0.
            let lead = &shape[..shape.len() - 1];
            let index = &mut index[..shape.len()];
            unflatten_into(row, lead, index);
            index[lead.len()] = 0;
            // Operands come before the node in the scratch.
            let (before, rest) = scratch.split_at_mut(start);
            let out = &mut rest[..len];
            let row_of = |o| operand_row(o, before, &spans, sources, index, shape);
            match step.op {
                Op::Constant(c) => out.fill(c),
                Op::Input(_) | Op::Product { .. } => {
                    unreachable!("inputs are read, products have kernels of their own")
                }
                Op::Unary(op, _) => unary_row(op, row_of(&step.sources[0]), out),
                Op::Binary(op, _, _) => {
                    binary_row(op, row_of(&step.sources[0]), row_of(&step.sources[1]), out)
                }
                Op::Reduce(op, _) => {
                    out[0] = match row_of(&step.sources[0]) {
                        Row::Values(v) => reduce(op, v),
                        Row::Scalar(v) => reduce(op, &vec![v; width]),
                    };
                }
            }
        }
        for ((_, dst), &s) in dsts.iter_mut().zip(&written) {
            let (start, w) = spans[s];
            dst[row * w..(row + 1) * w].copy_from_slice(&scratch[start..start + w]);
        }
    }
}
