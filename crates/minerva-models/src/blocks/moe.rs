//! Mixture of experts as in gpt-oss: a linear router scores every expert, each token goes
//! to its `top_k` best, and their outputs are summed with weights from a softmax over the
//! chosen scores. Each expert is a clamped SwiGLU MLP with biases. Only the chosen experts'
//! weights are read.

use minerva_core::{ops, Array, DType, Result};

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
    /// `x` is `[tokens, hidden]`; returns `[tokens, hidden]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (tokens, hidden) = (x.dim(0), x.dim(-1));
        let experts = self.router.dim(0);
        let scores = ops::linear(x, &self.router, Some(&self.router_bias))?.to_f32_vec()?;
        // For each expert, the tokens routed to it and their mixing weights.
        let mut routes: Vec<(Vec<i32>, Vec<f32>)> = vec![Default::default(); experts];
        for (t, row) in scores.chunks_exact(experts).enumerate() {
            for (e, w) in top_k_softmax(row, self.top_k) {
                routes[e].0.push(t as i32);
                routes[e].1.push(w);
            }
        }
        let mut out = Array::zeros(DType::F32, &[tokens, hidden])?;
        for (e, (rows, weights)) in routes.iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let rows = Array::from_i32(rows, &[rows.len()])?;
            let y = self.expert(e, &ops::take_rows(x, &rows)?)?;
            let weights = Array::from_f32(weights, &[weights.len()])?;
            ops::scatter_add_rows(&mut out, &rows, &y, &weights)?;
        }
        Ok(out)
    }

    /// Expert `e` on its tokens `x`.
    fn expert(&self, e: usize, x: &Array) -> Result<Array> {
        let (gate, up) = match &self.gate_up {
            GateUp::Interleaved { weight, bias } => {
                ops::deinterleave(&ops::linear(x, &weight.index(e)?, Some(&bias.index(e)?))?)?
            }
            GateUp::Separate {
                gate,
                gate_bias,
                up,
                up_bias,
            } => (
                ops::linear(x, &gate.index(e)?, Some(&gate_bias.index(e)?))?,
                ops::linear(x, &up.index(e)?, Some(&up_bias.index(e)?))?,
            ),
        };
        let h = ops::clamped_swiglu(&gate, &up, self.alpha, self.limit)?;
        ops::linear(&h, &self.down.index(e)?, Some(&self.down_bias.index(e)?))
    }
}

/// The `k` highest scores of `row` (highest first) with softmax weights over just those.
fn top_k_softmax(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(k);
    let max = row[order[0]];
    let exps: Vec<f32> = order.iter().map(|&e| (row[e] - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    order
        .into_iter()
        .zip(exps)
        .map(|(e, x)| (e, x / total))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_softmaxes_only_the_chosen() {
        let picks = top_k_softmax(&[0.1, 2.0, -1.0, 2.0f32.ln() + 2.0], 2);
        assert_eq!(picks.iter().map(|p| p.0).collect::<Vec<_>>(), [3, 1]);
        assert!((picks[0].1 - 2.0 / 3.0).abs() < 1e-6);
        assert!((picks[1].1 - 1.0 / 3.0).abs() < 1e-6);
    }
}
