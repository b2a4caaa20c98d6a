//! Mixture of experts as in gpt-oss: a linear router scores every expert, each token goes
//! to its `top_k` best, and their outputs are summed with weights from a softmax over the
//! chosen scores. Each expert is a clamped SwiGLU MLP with biases. Only the chosen experts'
//! weights are read.

use minerva_core::ops::{self, SwigluExperts};
use minerva_core::{Array, Result};

use super::bytes_of;

/// The experts' gate and up projections, as checkpoints store them.
pub use minerva_core::ops::ExpertGateUp as GateUp;

pub struct Moe {
    /// `[experts, hidden]` and `[experts]`.
    pub router: Array,
    pub router_bias: Array,
    pub gate_up: GateUp,
    /// `[experts, hidden, inter]` and `[experts, hidden]`.
    pub down: Array,
    pub down_bias: Array,
    pub top_k: usize,
    /// SwiGLU's sigmoid sharpness (1.702 in gpt-oss) and clamp.
    pub alpha: f32,
    pub limit: f32,
}

impl Moe {
    /// Every weight array (to move them between devices).
    pub fn weights_mut(&mut self) -> Vec<&mut Array> {
        let mut all = vec![
            &mut self.router,
            &mut self.router_bias,
            &mut self.down,
            &mut self.down_bias,
        ];
        match &mut self.gate_up {
            GateUp::Interleaved { weight, bias } => all.extend([weight, bias]),
            GateUp::Separate {
                gate,
                gate_bias,
                up,
                up_bias,
            } => all.extend([gate, gate_bias, up, up_bias]),
        }
        all
    }

    /// Bytes of the stacked expert weights and biases (all experts).
    pub fn expert_bytes(&self) -> u64 {
        let gate_up = match &self.gate_up {
            GateUp::Interleaved { weight, bias } => bytes_of([weight, bias]),
            GateUp::Separate {
                gate,
                gate_bias,
                up,
                up_bias,
            } => bytes_of([gate, gate_bias, up, up_bias]),
        };
        gate_up + bytes_of([&self.down, &self.down_bias])
    }

    /// `x` is `[tokens, hidden]`; returns `[tokens, hidden]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let scores = ops::linear(x, &self.router, Some(&self.router_bias))?;
        let (experts, weights) = ops::top_k_softmax(&scores, self.top_k)?;
        let stack = SwigluExperts {
            gate_up: &self.gate_up,
            down: &self.down,
            down_bias: &self.down_bias,
            alpha: self.alpha,
            limit: self.limit,
        };
        ops::mixture_of_experts(x, &stack, &experts, &weights)
    }
}
