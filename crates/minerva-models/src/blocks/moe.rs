//! Mixture of experts as in gpt-oss: a linear router scores every expert, each token goes
//! to its `top_k` best, and their outputs are summed with weights from a softmax over the
//! chosen scores. Each expert is a clamped SwiGLU MLP with biases. Only the chosen experts'
//! weights are read.

use minerva_core::{ops, Array, Result};

use super::bytes_of;

/// The experts' gate and up projections, as checkpoints store them.
pub enum GateUp {
    /// One `[experts, 2 * inter, hidden]` weight whose rows alternate gate, up, gate, ...
    /// (transformers and OpenAI's release), with a `[experts, 2 * inter]` bias.
    Interleaved { weight: Array, bias: Array },
    /// Separate `[experts, inter, hidden]` weights and `[experts, inter]` biases (MLX).
    Separate {
        gate: Array,
        gate_bias: Array,
        up: Array,
        up_bias: Array,
    },
}

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
        // [tokens, top_k, inter] each: every token through each of its chosen experts.
        let (gate, up) = match &self.gate_up {
            GateUp::Interleaved { weight, bias } => {
                ops::deinterleave(&ops::gather_linear(x, weight, Some(bias), &experts)?)?
            }
            GateUp::Separate {
                gate,
                gate_bias,
                up,
                up_bias,
            } => (
                ops::gather_linear(x, gate, Some(gate_bias), &experts)?,
                ops::gather_linear(x, up, Some(up_bias), &experts)?,
            ),
        };
        let h = ops::clamped_swiglu(&gate, &up, self.alpha, self.limit)?;
        let y = ops::gather_linear(&h, &self.down, Some(&self.down_bias), &experts)?;
        ops::weighted_sum(&y, &weights)
    }
}
