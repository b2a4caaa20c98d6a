//! From a recorded graph to a plan: the nodes the outputs need (dead ones dropped), each
//! computed once (common subexpressions merged), grouped into fused kernels, with their
//! buffers placed by liveness.

use std::collections::HashMap;

use super::memory::{plan_memory, MemoryPlan};
use super::{Graph, Node, NodeId, Op};

/// One fused kernel: it computes node `root` (of the plan's nodes) in one pass, evaluating
/// the nodes of `fused` (inlined ancestors of `root`, inputs before users, `root` last) per
/// position and reading every other input from a buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub root: usize,
    pub fused: Vec<usize>,
    /// Nodes read from buffers (graph inputs or other kernels' roots), in first-use order.
    pub reads: Vec<usize>,
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
    /// Where each kernel's result lives.
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
}

/// Compiles what `outputs` need of `graph`.
pub fn compile(graph: &Graph, outputs: &[NodeId]) -> Plan {
    let (nodes, outputs, merged) = live_unique(graph, outputs);
    let consumers = consumers(&nodes);
    let is_output = |i: usize| outputs.contains(&i);
    // A node gets its own kernel (and buffer) unless its only user can compute it in the
    // same pass at no extra cost: an elementwise user of the same shape (a reduction's
    // epilogue, or a chain), or a reduction over it (its prologue). Never an input or output.
    let inlined: Vec<bool> = (0..nodes.len())
        .map(|i| {
            let node = &nodes[i];
            match node.op {
                Op::Input(_) => false,
                _ if is_output(i) => false,
                Op::Constant(_) => true,
                _ => match consumers[i].as_slice() {
                    [user] => {
                        let user = &nodes[*user];
                        matches!(user.op, Op::Reduce(..))
                            || (user.op.is_elementwise() && user.shape == node.shape)
                    }
                    _ => false,
                },
            }
        })
        .collect();
    let kernels: Vec<Kernel> = (0..nodes.len())
        .filter(|&i| !inlined[i] && !matches!(nodes[i].op, Op::Input(_)))
        .map(|root| kernel(&nodes, &inlined, root))
        .collect();
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
        let map = |id: NodeId| NodeId(new_index[id.0]);
        let op = match node.op {
            Op::Unary(u, x) => Op::Unary(u, map(x)),
            Op::Binary(b, x, y) => Op::Binary(b, map(x), map(y)),
            Op::Reduce(r, x) => Op::Reduce(r, map(x)),
            other => other,
        };
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

/// Each node's users, in order.
fn consumers(nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut users = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for input in node.op.inputs() {
            if !users[input.0].contains(&i) {
                users[input.0].push(i);
            }
        }
    }
    users
}

/// The kernel that computes `root`: its inlined ancestors and the buffers it reads.
fn kernel(nodes: &[Node], inlined: &[bool], root: usize) -> Kernel {
    let mut fused = Vec::new();
    let mut reads = Vec::new();
    let mut stack = vec![root];
    let mut in_kernel = vec![false; nodes.len()];
    in_kernel[root] = true;
    while let Some(i) = stack.pop() {
        fused.push(i);
        for input in nodes[i].op.inputs() {
            let j = input.0;
            if inlined[j] {
                if !in_kernel[j] {
                    in_kernel[j] = true;
                    stack.push(j);
                }
            } else if !reads.contains(&j) {
                reads.push(j);
            }
        }
    }
    fused.sort_unstable(); // topological: the plan's numbering is
    Kernel { root, fused, reads }
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
    fn rms_norm_fuses_into_two_passes() {
        let mut g = Graph::new();
        let x = g.input(&[3, 8]);
        let w = g.input(&[8]);
        let y = g.rms_norm(x, w, 1e-5).unwrap();
        let plan = compile(&g, &[y]);
        // Pass 1: rsqrt(sum(x^2) / d + eps) per row (square, reduction and epilogue fused);
        // pass 2: x * r * w.
        assert_eq!(plan.launches(), 2, "{:#?}", plan.kernels);
        let first = &plan.kernels[0];
        assert!(first
            .fused
            .iter()
            .any(|&i| matches!(plan.nodes[i].op, Op::Reduce(Reduce::Sum, _))));
        assert!(first
            .fused
            .iter()
            .any(|&i| matches!(plan.nodes[i].op, Op::Unary(Unary::Square, _))));
    }
}
