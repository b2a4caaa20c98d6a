//! Row-wise kernels the compiled graphs do not generate: rotary embedding, argmax, expert
//! routing. Rows are short (a hidden vector), so these run on one thread and lean on
//! auto-vectorization.

use crate::ops::RopeStyle;

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
