//! Random graphs for the compiled-graph tests (`graph.rs`, `cuda_ops.rs`).
#![allow(dead_code)] // each test binary uses part of it

use minerva_core::graph::{Binary, Graph, NodeId, Op, Reduce, Unary};

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.below(4001) as f32 - 2000.0) / 1000.0)
            .collect()
    }
}

pub const UNARY: [Unary; 9] = [
    Unary::Neg,
    Unary::Exp,
    Unary::Recip,
    Unary::Sqrt,
    Unary::Rsqrt,
    Unary::Square,
    Unary::Sigmoid,
    Unary::Silu,
    Unary::Tanh,
];
const BINARY: [Binary; 6] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Max,
    Binary::Min,
];

/// Unary ops whose f32 results are exact on every IEEE device (correctly rounded).
pub const EXACT_UNARY: [Unary; 5] = [
    Unary::Neg,
    Unary::Recip,
    Unary::Sqrt,
    Unary::Rsqrt,
    Unary::Square,
];

/// A random graph over inputs that broadcast to `[rows, cols]`, with unary ops from `unary`
/// and reductions from `reductions`, and some of its nodes as outputs.
pub fn random_graph(rng: &mut Rng, unary: &[Unary], reductions: &[Reduce]) -> (Graph, Vec<NodeId>) {
    let (rows, cols) = (1 + rng.below(5), 1 + rng.below(9));
    let shapes = [vec![rows, cols], vec![cols], vec![rows, 1], vec![1, cols]];
    let mut g = Graph::new();
    let mut nodes: Vec<NodeId> = (0..1 + rng.below(3))
        .map(|_| g.input(&shapes[rng.below(shapes.len())]))
        .collect();
    nodes.push(g.constant(0.5));
    for _ in 0..4 + rng.below(20) {
        let pick = |rng: &mut Rng, nodes: &[NodeId]| nodes[rng.below(nodes.len())];
        let id = match rng.below(10) {
            0..=3 => g.unary(unary[rng.below(unary.len())], pick(rng, &nodes)),
            4..=7 => {
                let (a, b) = (pick(rng, &nodes), pick(rng, &nodes));
                g.binary(BINARY[rng.below(BINARY.len())], a, b)
                    .expect("they broadcast")
            }
            _ => {
                let x = pick(rng, &nodes);
                if g.shape(x).is_empty() {
                    continue;
                }
                g.reduce(reductions[rng.below(reductions.len())], x)
                    .unwrap()
            }
        };
        nodes.push(id);
    }
    let outputs = (0..1 + rng.below(3))
        .map(|_| nodes[nodes.len() - 1 - rng.below(nodes.len().min(4))])
        .collect();
    (g, outputs)
}

/// Random values for each input of `g`.
pub fn input_values(rng: &mut Rng, g: &Graph) -> Vec<Vec<f32>> {
    g.nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Input(_)))
        .map(|n| rng.values(n.numel()))
        .collect()
}

/// Equal bits, any NaN equal to any NaN.
pub fn same_bits(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()))
        })
}
