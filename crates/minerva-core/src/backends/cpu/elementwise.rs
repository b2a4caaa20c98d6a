//! Row-wise kernels: normalization, rotary embedding, softmax, activations. Rows are short
//! (a hidden vector), so these run on one thread and lean on auto-vectorization.

use crate::ops::RopeStyle;

/// `out = x / rms(x) * weight`, row by row (`weight.len()` values per row).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean_sq = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * w;
        }
    }
}

/// Rotates each head of `x` (`[tokens, heads, head_dim]`) in place by `positions[t] * inv_freq`.
/// Only the first `2 * inv_freq.len()` dimensions of a head rotate; cos and sin are scaled by
/// `mscale` (YaRN's attention factor; 1 otherwise).
pub fn rope(
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
    positions: &[i32],
    inv_freq: &[f32],
    style: RopeStyle,
    mscale: f32,
) {
    let half = inv_freq.len();
    let mut cos = vec![0.0f32; half];
    let mut sin = vec![0.0f32; half];
    for (t, &pos) in positions.iter().enumerate() {
        for i in 0..half {
            let angle = pos as f32 * inv_freq[i];
            cos[i] = angle.cos() * mscale;
            sin[i] = angle.sin() * mscale;
        }
        let token = &mut x[t * heads * head_dim..(t + 1) * heads * head_dim];
        for head in token.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Half => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}

/// In-place softmax over each row of `d` values.
pub fn softmax(x: &mut [f32], d: usize) {
    for row in x.chunks_exact_mut(d) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `out = silu(gate) * up`, SwiGLU's gating.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// gpt-oss's clamped SwiGLU: `(clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g)` with
/// `g = min(gate, limit)`.
pub fn clamped_swiglu(gate: &[f32], up: &[f32], alpha: f32, limit: f32, out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let g = g.min(limit);
        let u = u.clamp(-limit, limit);
        *o = (u + 1.0) * g / (1.0 + (-alpha * g).exp());
    }
}

/// `out = silu(x)`.
pub fn silu(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v / (1.0 + (-v).exp());
    }
}

/// The index of the largest value (the first of equal ones; 0 when none compares larger
/// than the first, e.g. an empty or all-NaN row).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// The `k` highest scores of `row` (highest first, ties to the lower index) with softmax
/// weights over just those.
pub fn top_k_softmax(row: &[f32], k: usize) -> Vec<(usize, f32)> {
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
