//! Drawing a token from a row of logits with temperature, top-k, top-p and min-p, by rules
//! every backend follows exactly (the CUDA kernels in `sampling.cu` mirror this file), so a
//! seeded draw picks the same token on any device:
//!
//! - Order: tokens by an order-preserving key of their logit (NaN orders as -inf and is
//!   never picked); equal keys stand or fall together.
//! - Probability mass: `exp((l - max) / temperature)` in 32.32 fixed point, so sums are
//!   exact in any order (a GPU sums in whatever order its threads run).
//! - Kept: the top `top_k` keys (0 = all); of those, the fewest from the top whose mass
//!   reaches `top_p` of their total; and, with `min_p > 0`, those whose mass relative to the
//!   most likely token is at least `min_p`. All three cut the same order, so the kept
//!   tokens are the keys at or above one threshold (plus the min-p test).
//! - Pick: Gumbel-max, the kept token with the largest `l / temperature - ln(-ln(u))`,
//!   where `u` is a uniform draw hashed from (seed, counter, token id). This samples the
//!   softmax of the kept logits exactly, with no sort and no prefix sum.

use crate::ops::{Draw, SampleSettings, MAX_TOP_K};

/// An order-preserving key: a larger float has a larger key; NaN is the key of -inf.
pub fn order_key(v: f32) -> u32 {
    let v = if v.is_nan() { f32::NEG_INFINITY } else { v };
    let u = v.to_bits();
    if u & 0x8000_0000 != 0 {
        !u
    } else {
        u | 0x8000_0000
    }
}

/// `exp((l - m) / t)` in 32.32 fixed point (0 for NaN).
pub fn fixed_mass(l: f32, m: f32, t: f32) -> u64 {
    if l.is_nan() {
        return 0;
    }
    let scaled = ((l - m) / t).exp() * 4_294_967_296.0;
    (scaled as f64).round_ties_even() as u64
}

/// A uniform draw in (0, 1) for token `i`: splitmix64 of (seed, counter, i), top 24 bits.
pub fn draw_uniform(seed: u64, counter: u32, i: u32) -> f32 {
    let mut x = seed
        .wrapping_add((counter as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
        .wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    ((x >> 40) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// The row's largest logit and the threshold key of the kept tokens (before min-p).
pub fn bounds(row: &[f32], s: &SampleSettings) -> (f32, u32) {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if m == f32::NEG_INFINITY {
        return (m, 0);
    }
    // (key, logit), largest key first.
    let mut keyed: Vec<(u32, f32)> = row.iter().map(|&l| (order_key(l), l)).collect();
    keyed.sort_unstable_by_key(|&(key, _)| std::cmp::Reverse(key));
    let mut floor = 0;
    let k = s.top_k.min(MAX_TOP_K);
    if k > 0 && k < row.len() {
        floor = keyed[k - 1].0;
        keyed.retain(|&(key, _)| key >= floor);
    }
    if s.top_p < 1.0 {
        let mass = |l: f32| fixed_mass(l, m, s.temperature);
        let total: u64 = keyed.iter().map(|&(_, l)| mass(l)).sum();
        let target = ((s.top_p as f64 * total as f64).ceil() as u64).max(1);
        let mut cum = 0;
        for (i, &(key, l)) in keyed.iter().enumerate() {
            cum += mass(l);
            let group_ends = keyed.get(i + 1).is_none_or(|next| next.0 != key);
            if group_ends && cum >= target {
                floor = floor.max(key);
                break;
            }
        }
    }
    (m, floor)
}

/// The token drawn from `row` (0 when no token can be picked, e.g. all NaN).
pub fn sample_row(row: &[f32], s: &SampleSettings, draw: &Draw) -> usize {
    let (m, floor) = bounds(row, s);
    let t = s.temperature;
    let mut best = (f32::NEG_INFINITY, None);
    for (i, &l) in row.iter().enumerate() {
        if l.is_nan() || order_key(l) < floor {
            continue;
        }
        if s.min_p > 0.0 && ((l - m) / t).exp() < s.min_p {
            continue;
        }
        let score = l / t - (-draw_uniform(draw.seed, draw.counter, i as u32).ln()).ln();
        if score > best.0 {
            best = (score, Some(i));
        }
    }
    best.1.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(top_k: usize, top_p: f32, min_p: f32) -> SampleSettings {
        SampleSettings {
            temperature: 1.0,
            top_k,
            top_p,
            min_p,
        }
    }

    /// How often each token comes up in `n` draws.
    fn histogram(row: &[f32], s: &SampleSettings, n: u32) -> Vec<f64> {
        let mut h = vec![0.0; row.len()];
        for counter in 0..n {
            h[sample_row(row, s, &Draw { seed: 7, counter })] += 1.0 / n as f64;
        }
        h
    }

    #[test]
    fn keys_keep_the_order_of_floats() {
        let vals = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(order_key(w[0]) <= order_key(w[1]), "{w:?}");
        }
        assert_eq!(order_key(f32::NAN), order_key(f32::NEG_INFINITY));
    }

    #[test]
    fn draws_are_uniform_and_repeat_under_a_seed() {
        let u: Vec<f32> = (0..10_000).map(|i| draw_uniform(3, 9, i)).collect();
        assert!(u.iter().all(|&x| x > 0.0 && x < 1.0));
        let mean = u.iter().sum::<f32>() / u.len() as f32;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert_eq!(draw_uniform(3, 9, 5), u[5]);
        assert_ne!(draw_uniform(4, 9, 5), u[5]);
    }

    #[test]
    fn frequencies_follow_the_softmax_of_the_kept_tokens() {
        let row = [1.0f32, 2.0, 0.5, 3.0, -1.0];
        let exps: Vec<f64> = row.iter().map(|&l| (l as f64).exp()).collect();
        let total: f64 = exps.iter().sum();
        let h = histogram(&row, &settings(0, 1.0, 0.0), 20_000);
        for (f, e) in h.iter().zip(&exps) {
            // 20k draws: a standard error under 0.0035 per token.
            assert!((f - e / total).abs() < 0.015, "{h:?}");
        }
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        let row = [1.0f32, 2.0, 0.5, 3.0, -1.0];
        // top-k 2: tokens 3 and 1 only.
        let h = histogram(&row, &settings(2, 1.0, 0.0), 2000);
        assert!(
            h[0] == 0.0 && h[2] == 0.0 && h[4] == 0.0 && h[1] > 0.1,
            "{h:?}"
        );
        // top-p 0.5: token 3 alone holds 0.63 of the mass.
        assert_eq!(bounds(&row, &settings(0, 0.5, 0.0)).1, order_key(3.0));
        // top-p 0.9: logits 3 and 2 hold 0.85, with 1 they hold 0.94.
        assert_eq!(bounds(&row, &settings(0, 0.9, 0.0)).1, order_key(1.0));
        // min-p 0.3: exp(l - 3) >= 0.3 keeps logits 3 and 2 (exp(-1) = 0.37): tokens 3 and 1.
        let h = histogram(&row, &settings(0, 1.0, 0.3), 2000);
        assert!(
            h[0] == 0.0 && h[2] == 0.0 && h[4] == 0.0 && h[1] > 0.1,
            "{h:?}"
        );
    }

    #[test]
    fn equal_logits_stand_together_and_nan_is_never_picked() {
        let row = [2.0f32, 2.0, f32::NAN, 1.0];
        assert_eq!(bounds(&row, &settings(1, 1.0, 0.0)).1, order_key(2.0));
        let h = histogram(&row, &settings(1, 1.0, 0.0), 2000);
        assert!(
            h[0] > 0.3 && h[1] > 0.3 && h[2] == 0.0 && h[3] == 0.0,
            "{h:?}"
        );
        assert_eq!(
            sample_row(
                &[f32::NAN; 3],
                &settings(0, 1.0, 0.0),
                &Draw {
                    seed: 1,
                    counter: 0
                }
            ),
            0
        );
    }
}
