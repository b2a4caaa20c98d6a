//! A compute graph recorded once and compiled into a plan that is replayed: the lazy half
//! of an MLX-style engine. A [`Graph`] records f32 ops as nodes (nothing runs); [`compile`]
//! turns the nodes its outputs need into a [`Plan`]: dead nodes dropped, common
//! subexpressions merged, runs of elementwise ops and row reductions fused into one kernel
//! each (a norm, a softmax, a residual sum with the norm of it: one pass, writing only what
//! is read later), and the values passed between kernels placed in one arena by liveness.
//! Backends run plans (`backends::cpu::fused`, `backends::cuda::fused`); [`Compiled`] keeps
//! one plan per input-shape bucket.
//!
//! Broadcasting follows NumPy: shapes align at their last axis and an axis of 1 stretches.
//! Reductions run over the last axis and keep it (as 1).

mod cache;
mod compile;
mod dump;
pub(crate) mod lazy;
mod memory;

pub use cache::Compiled;
pub use compile::{compile, Kernel, Plan, Source, Step};
pub use lazy::{
    enabled as lazy_enabled, lazily, set_enabled as set_lazy, stats as lazy_stats, traced,
    LazyStats,
};
pub use memory::{Buffer, MemoryPlan};

use crate::{Array, Device, Error, Result};

/// A node of a [`Graph`] (its index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) usize);

impl NodeId {
    pub fn index(self) -> usize {
        self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unary {
    Neg,
    Exp,
    Recip,
    Sqrt,
    Rsqrt,
    Square,
    Sigmoid,
    /// x * sigmoid(x).
    Silu,
    Tanh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

/// A reduction over the last axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduce {
    /// Summed from the first value to the last.
    Sum,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// The graph's i-th input.
    Input(usize),
    /// A scalar (shape `[]`).
    Constant(f32),
    Unary(Unary, NodeId),
    Binary(Binary, NodeId, NodeId),
    Reduce(Reduce, NodeId),
    /// `x · wᵀ (+ bias)`: `x` is `[.., k]`, the weight an input `[n, k]` of any dtype the
    /// backends multiply (dense or quantized), the bias `[n]`; the result is `[.., n]`.
    Product {
        x: NodeId,
        w: NodeId,
        bias: Option<NodeId>,
    },
}

impl Op {
    /// The nodes this op reads.
    pub fn inputs(&self) -> Vec<NodeId> {
        match *self {
            Op::Input(_) | Op::Constant(_) => Vec::new(),
            Op::Unary(_, x) | Op::Reduce(_, x) => vec![x],
            Op::Binary(_, a, b) => vec![a, b],
            Op::Product { x, w, bias } => [x, w].into_iter().chain(bias).collect(),
        }
    }

    /// The op with every operand `id` replaced by `map(id)`.
    pub fn map_inputs(&self, map: impl Fn(NodeId) -> NodeId) -> Op {
        match *self {
            Op::Unary(u, x) => Op::Unary(u, map(x)),
            Op::Binary(b, x, y) => Op::Binary(b, map(x), map(y)),
            Op::Reduce(r, x) => Op::Reduce(r, map(x)),
            Op::Product { x, w, bias } => Op::Product {
                x: map(x),
                w: map(w),
                bias: bias.map(&map),
            },
            other => other,
        }
    }

    /// Whether it computes each value from the same position of its inputs.
    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(..) | Op::Binary(..))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub shape: Vec<usize>,
}

impl Node {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The shape as kernels evaluate it: a scalar as `[1]` (it broadcasts the same way).
    pub fn dims(&self) -> Vec<usize> {
        if self.shape.is_empty() {
            vec![1]
        } else {
            self.shape.clone()
        }
    }
}

/// Ops recorded in order (every node's inputs come before it).
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    inputs: usize,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.nodes[id.0].shape
    }

    /// Inputs recorded so far.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    fn push(&mut self, op: Op, shape: Vec<usize>) -> NodeId {
        self.nodes.push(Node { op, shape });
        NodeId(self.nodes.len() - 1)
    }

    /// The next input, of `shape`.
    pub fn input(&mut self, shape: &[usize]) -> NodeId {
        self.inputs += 1;
        self.push(Op::Input(self.inputs - 1), shape.to_vec())
    }

    pub fn constant(&mut self, value: f32) -> NodeId {
        self.push(Op::Constant(value), Vec::new())
    }

    pub fn unary(&mut self, op: Unary, x: NodeId) -> NodeId {
        let shape = self.shape(x).to_vec();
        self.push(Op::Unary(op, x), shape)
    }

    /// `op(a, b)` with the two shapes broadcast together; a shape error where they cannot be.
    pub fn binary(&mut self, op: Binary, a: NodeId, b: NodeId) -> Result<NodeId> {
        let shape = broadcast_shapes(self.shape(a), self.shape(b)).ok_or_else(|| {
            Error::Shape(format!(
                "{op:?}: shapes {:?} and {:?} do not broadcast",
                self.shape(a),
                self.shape(b)
            ))
        })?;
        Ok(self.push(Op::Binary(op, a, b), shape))
    }

    /// `op` over the last axis of `x`, kept as 1; a shape error for a scalar.
    pub fn reduce(&mut self, op: Reduce, x: NodeId) -> Result<NodeId> {
        let mut shape = self.shape(x).to_vec();
        let Some(last) = shape.last_mut() else {
            return Err(Error::Shape(format!("{op:?} of a scalar")));
        };
        *last = 1;
        Ok(self.push(Op::Reduce(op, x), shape))
    }

    /// `x · wᵀ + bias` (see [`Op::Product`]); a shape error where they do not fit.
    pub fn product(&mut self, x: NodeId, w: NodeId, bias: Option<NodeId>) -> Result<NodeId> {
        let (xs, ws) = (self.shape(x), self.shape(w));
        let (&[n, k], Some(&xk)) = (ws, xs.last()) else {
            return Err(Error::Shape(format!(
                "product of {xs:?} and a weight {ws:?}: need [.., k] and [n, k]"
            )));
        };
        if xk != k {
            return Err(Error::Shape(format!(
                "product of {xs:?} and a weight {ws:?}: the input's last axis is not the weight's"
            )));
        }
        if let Some(b) = bias.map(|b| self.shape(b)).filter(|b| *b != [n]) {
            return Err(Error::Shape(format!(
                "product with a weight {ws:?}: bias {b:?} for {n} outputs"
            )));
        }
        let mut shape = xs.to_vec();
        *shape.last_mut().expect("x has a last axis") = n;
        Ok(self.push(Op::Product { x, w, bias }, shape))
    }

    /// RMS norm over the last axis, `x / sqrt(mean(x^2) + eps) * weight`, from primitive ops
    /// (as a model would record it).
    pub fn rms_norm(&mut self, x: NodeId, weight: NodeId, eps: f32) -> Result<NodeId> {
        let d = *self.shape(x).last().unwrap_or(&1);
        let sq = self.unary(Unary::Square, x);
        let sum = self.reduce(Reduce::Sum, sq)?;
        let d = self.constant(d as f32);
        let mean = self.binary(Binary::Div, sum, d)?;
        let eps = self.constant(eps);
        let var = self.binary(Binary::Add, mean, eps)?;
        let r = self.unary(Unary::Rsqrt, var);
        let normed = self.binary(Binary::Mul, x, r)?;
        self.binary(Binary::Mul, normed, weight)
    }
}

/// Runs `plan` on `inputs` (all on one device; f32, but for products' weights) there, and
/// returns its outputs.
pub fn run(plan: &Plan, inputs: &[&Array]) -> Result<Vec<Array>> {
    let device = inputs.first().map_or(Device::Cpu, |a| a.device());
    if let Some(other) = inputs.iter().find(|a| a.device() != device) {
        return Err(Error::Device(format!(
            "graph inputs on {device} and {}",
            other.device()
        )));
    }
    crate::backends::backend(device).run_plan(device, plan, inputs)
}

/// NumPy broadcasting of two shapes, or `None`.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let pad = rank - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast_from_the_last_axis() {
        assert_eq!(broadcast_shapes(&[4, 1], &[3]), Some(vec![4, 3]));
        assert_eq!(broadcast_shapes(&[], &[2, 5]), Some(vec![2, 5]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 3]), None);
        let mut g = Graph::new();
        let x = g.input(&[2, 3]);
        let y = g.input(&[4]);
        assert!(g.binary(Binary::Add, x, y).is_err());
        let s = g.reduce(Reduce::Sum, x).unwrap();
        assert_eq!(g.shape(s), [2, 1]);
    }
}
