//! From a recorded graph to a plan: the nodes the outputs need (dead ones dropped), each
//! computed once (common subexpressions merged), grouped into fused kernels, with their
//! buffers placed by liveness.
//!
//! A kernel is a run of consecutive nodes (in recording order) over one domain: the same
//! leading axes ("rows") and a last axis of the kernel's width or 1. Without a reduction it
//! is a flat pass, one value at a time; with reductions it is a row pass: each row's
//! reductions are computed in order and the values that use them (a norm's scaling, a
//! softmax's division) in the same pass. A kernel writes only the values later kernels or
//! the caller read, so a residual sum and its norm come out of one pass.
//!
//! Products are kernels of their own, run by the backends' product kernels; consecutive
//! products of one input (a layer's q, k and v, or its gate and up) make one kernel, which
//! a backend runs as one launch or one parallel region.

use std::collections::HashMap;

use super::memory::{plan_memory, MemoryPlan};
use super::{Graph, Node, NodeId, Op};

/// One fused kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// The nodes it computes, inputs before users (constants it uses included).
    pub nodes: Vec<usize>,
    /// Those of `nodes` it writes to buffers (read by later kernels, or plan outputs).
    pub writes: Vec<usize>,
    /// Nodes read from buffers (graph inputs or other kernels' writes), in first-use order.
    pub reads: Vec<usize>,
    /// The domain's leading axes; each node of the kernel has them.
    pub lead: Vec<usize>,
    /// The domain's last axis: each node's last axis is this or 1.
    pub width: usize,
    /// Whether it reduces rows (a row pass) or not (a flat pass).
    pub reduces: bool,
    /// Whether its nodes are products of one input (and nothing else).
    pub products: bool,
    /// `nodes` as a runner evaluates them, in the same order.
    pub steps: Vec<Step>,
}

/// One node of a kernel as its runner evaluates it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub node: usize,
    pub op: Op,
    /// The shape it is evaluated over (a reduction's is its operand's), never empty.
    pub dims: Vec<usize>,
    /// Values it has per row of the domain (1 for a reduction, or a per-row value).
    pub len: usize,
    /// Where each operand comes from.
    pub sources: Vec<Source>,
}

/// Where a kernel's node reads an operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The row of the kernel's `n`-th node (an earlier one).
    Fused(usize),
    Constant(f32),
    /// The kernel's `read`-th buffer (`Kernel::reads`), of shape `dims`.
    Read {
        read: usize,
        dims: Vec<usize>,
    },
}

impl Kernel {
    /// Rows of its domain.
    pub fn rows(&self) -> usize {
        self.lead.iter().product()
    }
}

/// A compiled graph.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The live nodes, renumbered in topological order (inputs keep their `Op::Input` index).
    pub nodes: Vec<Node>,
    /// Plan node of each output.
    pub outputs: Vec<usize>,
    /// In the order they run.
    pub kernels: Vec<Kernel>,
    /// Where the values kernels pass to each other live (outputs get their own memory).
    pub memory: MemoryPlan,
    /// Nodes the recorded graph held, and those merged as common subexpressions.
    pub recorded: usize,
    pub merged: usize,
}

impl Plan {
    /// Passes over memory (kernels) the plan makes.
    pub fn launches(&self) -> usize {
        self.kernels.len()
    }

    /// Bytes of the plan's outputs.
    pub fn output_bytes(&self) -> usize {
        self.outputs
            .iter()
            .map(|&o| 4 * self.nodes[o].numel())
            .sum()
    }

    /// The nodes products read as weights (inputs of any dtype; every other input is f32).
    pub fn weights(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Product { w, .. } => Some(w.index()),
                _ => None,
            })
            .collect()
    }

    /// Equal for plans of the same computation (see [`fingerprint`]).
    pub(crate) fn fingerprint(&self) -> Vec<u64> {
        fingerprint(&self.nodes, self.outputs.iter().copied())
    }
}

/// Compiles what `outputs` need of `graph`.
pub fn compile(graph: &Graph, outputs: &[NodeId]) -> Plan {
    let (nodes, outputs, merged) = live_unique(graph, outputs);
    let kernels = group(&nodes, &outputs);
    let memory = plan_memory(&nodes, &kernels, &outputs);
    Plan {
        nodes,
        outputs,
        kernels,
        memory,
        recorded: graph.nodes().len(),
        merged,
    }
}

/// What makes two graphs the same computation: every node's op, operands and shape (a
/// constant by its bits), and the outputs. Plans compile deterministically, so equal
/// fingerprints mean equal plans.
pub(crate) fn fingerprint(nodes: &[Node], outputs: impl Iterator<Item = usize>) -> Vec<u64> {
    let mut key = Vec::with_capacity(nodes.len() * 6 + 8);
    for node in nodes {
        let (tag, a, b) = match node.op {
            Op::Input(k) => (0, k as u64, 0),
            Op::Constant(v) => (1, u64::from(v.to_bits()), 0),
            Op::Unary(u, x) => (2 + ((u as u64) << 8), x.0 as u64, 0),
            Op::Binary(o, x, y) => (3 + ((o as u64) << 8), x.0 as u64, y.0 as u64),
            Op::Reduce(o, x) => (4 + ((o as u64) << 8), x.0 as u64, 0),
            Op::Product { x, w, bias } => (
                5 + (bias.map_or(0, |b| b.0 as u64 + 1) << 8),
                x.0 as u64,
                w.0 as u64,
            ),
        };
        key.extend([tag, a, b, node.shape.len() as u64]);
        key.extend(node.shape.iter().map(|&d| d as u64));
    }
    key.push(u64::MAX);
    key.extend(outputs.map(|o| o as u64));
    key
}

/// The domain a node is computed over: leading axes and last axis (a reduction's are its
/// operand's).
fn domain(nodes: &[Node], i: usize) -> (Vec<usize>, usize) {
    let dims = match nodes[i].op {
        Op::Reduce(_, x) => nodes[x.0].dims(),
        _ => nodes[i].dims(),
    };
    let (last, lead) = dims.split_last().expect("dims are never empty");
    (lead.to_vec(), *last)
}

/// Whether node `i`, over `(lead, width)`, can be computed in kernel `k`'s pass.
fn fits(k: &Kernel, nodes: &[Node], i: usize, lead: &[usize], width: usize) -> bool {
    if let Op::Product { x, .. } = nodes[i].op {
        // Products of one input share a kernel.
        let first_x = k.nodes.first().map(|&n| nodes[n].op.inputs()[0]);
        return k.products && first_x == Some(x);
    }
    if lead != k.lead || k.products {
        return false;
    }
    // A kernel of width 1 without reductions widens to the first wider node; its values
    // become per-row values of the wider pass.
    let widens = k.width == 1 && !k.reduces;
    match nodes[i].op {
        Op::Reduce(..) => width == k.width || widens,
        _ => width == k.width || width == 1 || widens,
    }
}

/// Groups the nodes into kernels: consecutive nodes that fit one domain share a pass.
/// Constants are computed inline by every kernel that uses them.
fn group(nodes: &[Node], outputs: &[usize]) -> Vec<Kernel> {
    let mut kernel_of: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut kernels: Vec<Kernel> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        match node.op {
            Op::Input(_) => continue,
            Op::Constant(_) if !outputs.contains(&i) => continue,
            _ => {}
        }
        let (lead, width) = domain(nodes, i);
        if !kernels
            .last()
            .is_some_and(|k| fits(k, nodes, i, &lead, width))
        {
            kernels.push(Kernel {
                nodes: Vec::new(),
                writes: Vec::new(),
                reads: Vec::new(),
                lead,
                width,
                reduces: false,
                products: matches!(node.op, Op::Product { .. }),
                steps: Vec::new(),
            });
        }
        let index = kernels.len() - 1;
        let k = &mut kernels[index];
        k.width = k.width.max(width);
        k.reduces |= matches!(node.op, Op::Reduce(..));
        for input in node.op.inputs() {
            let j = input.0;
            if matches!(nodes[j].op, Op::Constant(_)) {
                if !k.nodes.contains(&j) {
                    k.nodes.push(j);
                }
            } else if kernel_of[j] != Some(index) && !k.reads.contains(&j) {
                k.reads.push(j);
            }
        }
        k.nodes.push(i);
        kernel_of[i] = Some(index);
    }
    // A kernel writes what the caller or another kernel reads.
    let mut read_elsewhere = vec![false; nodes.len()];
    for k in &kernels {
        for &r in &k.reads {
            read_elsewhere[r] = true;
        }
    }
    for (index, k) in kernels.iter_mut().enumerate() {
        k.nodes.sort_unstable(); // topological: the plan's numbering is
        k.steps = k.nodes.iter().map(|&i| step(nodes, k, i)).collect();
        k.writes = k
            .nodes
            .iter()
            .copied()
            .filter(|&i| kernel_of[i] == Some(index) && (read_elsewhere[i] || outputs.contains(&i)))
            .collect();
    }
    kernels
}

/// Node `i` of kernel `k` (whose nodes and reads are final) as a runner evaluates it.
fn step(nodes: &[Node], k: &Kernel, i: usize) -> Step {
    let node = &nodes[i];
    let dims = match node.op {
        Op::Reduce(_, x) => nodes[x.0].dims(),
        _ => node.dims(),
    };
    let sources = node
        .op
        .inputs()
        .into_iter()
        .map(
            |x| match (k.nodes.iter().position(|&n| n == x.0), nodes[x.0].op) {
                (_, Op::Constant(c)) => Source::Constant(c),
                (Some(n), _) => Source::Fused(n),
                (None, _) => Source::Read {
                    read: k.reads.iter().position(|&r| r == x.0).expect("read"),
                    dims: nodes[x.0].dims(),
                },
            },
        )
        .collect();
    Step {
        node: i,
        op: node.op,
        dims,
        len: *node.dims().last().expect("dims are never empty"),
        sources,
    }
}

/// The nodes `outputs` reach, each distinct computation once, in topological order; the
/// outputs' new indices; how many duplicates were merged.
fn live_unique(graph: &Graph, outputs: &[NodeId]) -> (Vec<Node>, Vec<usize>, usize) {
    let mut live = vec![false; graph.nodes().len()];
    for o in outputs {
        live[o.0] = true;
    }
    for i in (0..graph.nodes().len()).rev() {
        if live[i] {
            for input in graph.nodes()[i].op.inputs() {
                live[input.0] = true;
            }
        }
    }
    let mut new_index = vec![usize::MAX; graph.nodes().len()];
    let mut nodes: Vec<Node> = Vec::new();
    let mut seen: HashMap<Key, usize> = HashMap::new();
    let mut merged = 0;
    for (i, node) in graph.nodes().iter().enumerate().filter(|(i, _)| live[*i]) {
        let op = node.op.map_inputs(|id| NodeId(new_index[id.0]));
        let key = Key::of(&op, &node.shape);
        if let Some(&existing) = seen.get(&key) {
            new_index[i] = existing;
            merged += 1;
            continue;
        }
        nodes.push(Node {
            op,
            shape: node.shape.clone(),
        });
        new_index[i] = nodes.len() - 1;
        seen.insert(key, nodes.len() - 1);
    }
    let outputs = outputs.iter().map(|o| new_index[o.0]).collect();
    (nodes, outputs, merged)
}

/// What makes two nodes the same computation (constants by their bits).
#[derive(PartialEq, Eq, Hash)]
struct Key(String);

impl Key {
    fn of(op: &Op, shape: &[usize]) -> Key {
        let op = match op {
            Op::Constant(v) => format!("const {:08x}", v.to_bits()),
            other => format!("{other:?}"),
        };
        Key(format!("{op} {shape:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Binary, Reduce, Unary};
    use super::*;

    #[test]
    fn dead_nodes_go_and_repeats_merge() {
        let mut g = Graph::new();
        let x = g.input(&[2, 4]);
        let a = g.unary(Unary::Exp, x);
        let b = g.unary(Unary::Exp, x); // the same as a
        let _dead = g.unary(Unary::Tanh, x);
        let s = g.binary(Binary::Add, a, b).unwrap();
        let plan = compile(&g, &[s]);
        assert_eq!(plan.recorded, 5);
        assert_eq!(plan.merged, 1);
        assert_eq!(plan.nodes.len(), 3, "{:?}", plan.nodes);
        // exp(x) + exp(x): one pass, exp computed once per position.
        assert_eq!(plan.launches(), 1);
    }

    #[test]
    fn a_norm_and_its_residual_sum_take_one_pass() {
        let mut g = Graph::new();
        let x = g.input(&[3, 8]);
        let y = g.input(&[3, 8]);
        let w = g.input(&[8]);
        let sum = g.binary(Binary::Add, x, y).unwrap();
        let normed = g.rms_norm(sum, w, 1e-5).unwrap();
        let plan = compile(&g, &[sum, normed]);
        // The sum, its squares, their sum, rsqrt and the scaling: one row pass, two writes.
        assert_eq!(plan.launches(), 1, "{plan}");
        let k = &plan.kernels[0];
        assert!(k.reduces);
        assert_eq!(k.writes, plan.outputs);
        assert_eq!(plan.memory.arena, 0, "nothing passes between kernels");
    }

    #[test]
    fn softmax_takes_one_pass_and_a_wider_op_another() {
        let mut g = Graph::new();
        let x = g.input(&[2, 5]);
        let m = g.reduce(Reduce::Max, x).unwrap();
        let shifted = g.binary(Binary::Sub, x, m).unwrap();
        let e = g.unary(Unary::Exp, shifted);
        let s = g.reduce(Reduce::Sum, e).unwrap();
        let p = g.binary(Binary::Div, e, s).unwrap();
        // A value over other rows cannot join the row pass.
        let t = g.input(&[4, 2, 5]);
        let q = g.binary(Binary::Mul, t, p).unwrap();
        let plan = compile(&g, &[q]);
        assert_eq!(plan.launches(), 2, "{plan}");
        assert_eq!(
            plan.kernels[0].writes.len(),
            1,
            "only p leaves the row pass"
        );
        assert_eq!(plan.memory.buffers.len(), 1);
    }
}
