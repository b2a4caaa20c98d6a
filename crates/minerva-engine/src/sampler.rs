//! Turning logits into the next token: greedy or temperature sampling with top-k, top-p,
//! min-p and a repetition penalty, reproducible under a seed.

use std::collections::HashMap;

use minerva_core::ops::{Draw, SampleSettings};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the `k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of already-seen tokens (1 = off).
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repetition_window: usize,
    /// OpenAI's penalties over the tokens this sampler has produced: subtract `presence`
    /// from the logit of every token produced at least once, and `frequency` times the
    /// number of times it was produced (0 = off).
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: Option<u64>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_window: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

pub struct Sampler {
    config: SamplerConfig,
    rng: StdRng,
    /// The seed of the draws made on a device, and how many were made.
    seed: u64,
    device_draws: u32,
    /// How often each token was sampled so far (for the presence/frequency penalties).
    produced: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let seed = config.seed.unwrap_or_else(rand::random);
        Sampler {
            config,
            rng: StdRng::seed_from_u64(seed),
            seed,
            device_draws: 0,
            produced: HashMap::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Whether this sampler just takes the most likely token of the raw logits (greedy, no
    /// penalties), which the device can pick without sending the logits to the host.
    pub fn is_argmax(&self) -> bool {
        let c = &self.config;
        c.temperature <= 0.0
            && c.repetition_penalty == 1.0
            && c.presence_penalty == 0.0
            && c.frequency_penalty == 0.0
    }

    /// Whether [`device_draw`](Sampler::device_draw) gives draws.
    pub fn draws_on_device(&self) -> bool {
        let c = &self.config;
        c.temperature > 0.0
            && c.repetition_penalty == 1.0
            && c.presence_penalty == 0.0
            && c.frequency_penalty == 0.0
    }

    /// The settings and randomness of the next draw made where the logits are (see
    /// `ops::sample`), when the choice depends on the logits alone: sampling (not greedy)
    /// without penalties over the history. Each call is a new draw; seeded samplers repeat.
    pub fn device_draw(&mut self) -> Option<(SampleSettings, Draw)> {
        if !self.draws_on_device() {
            return None;
        }
        let c = &self.config;
        let draw = Draw {
            seed: self.seed,
            counter: self.device_draws,
        };
        self.device_draws += 1;
        let settings = SampleSettings {
            temperature: c.temperature,
            top_k: c.top_k,
            top_p: c.top_p,
            min_p: c.min_p,
        };
        Some((settings, draw))
    }

    /// Records `token`, picked elsewhere by [`argmax`] as [`is_argmax`](Sampler::is_argmax)
    /// allows, as this sampler's own choice.
    pub fn accept(&mut self, token: u32) {
        *self.produced.entry(token).or_default() += 1;
    }

    /// Picks the next token from `logits`, given the tokens so far (`history`).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let token = self.pick(logits, history);
        self.accept(token);
        token
    }

    fn pick(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let c = &self.config;
        let mut logits = std::borrow::Cow::Borrowed(logits);
        if c.repetition_penalty != 1.0 {
            let l = logits.to_mut();
            let recent = &history[history.len().saturating_sub(c.repetition_window)..];
            let mut seen: Vec<u32> = recent.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(v) = l.get_mut(t as usize) {
                    *v = if *v > 0.0 {
                        *v / c.repetition_penalty
                    } else {
                        *v * c.repetition_penalty
                    };
                }
            }
        }
        if c.presence_penalty != 0.0 || c.frequency_penalty != 0.0 {
            let l = logits.to_mut();
            for (&t, &n) in &self.produced {
                if let Some(v) = l.get_mut(t as usize) {
                    *v -= c.presence_penalty + c.frequency_penalty * n as f32;
                }
            }
        }
        if c.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / c.temperature))
            .collect();
        if c.top_k > 0 && c.top_k < candidates.len() {
            candidates.select_nth_unstable_by(c.top_k - 1, by_score_desc);
            candidates.truncate(c.top_k);
        }
        // Softmax over the survivors.
        let max = candidates
            .iter()
            .fold(f32::NEG_INFINITY, |m, cand| m.max(cand.1));
        let mut total = 0.0;
        for cand in &mut candidates {
            cand.1 = (cand.1 - max).exp();
            total += cand.1;
        }
        candidates.iter_mut().for_each(|cand| cand.1 /= total);
        if c.min_p > 0.0 {
            // The most likely token has probability exp(0) / total.
            let floor = c.min_p / total;
            candidates.retain(|cand| cand.1 >= floor);
        }
        if c.top_p < 1.0 {
            keep_nucleus(&mut candidates, c.top_p);
        }
        let total: f32 = candidates.iter().map(|cand| cand.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        for &(id, p) in &candidates {
            r -= p;
            if r <= 0.0 {
                return id;
            }
        }
        candidates.last().map_or(0, |cand| cand.0)
    }
}

fn by_score_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1)
}

/// Keeps the most likely candidates whose probabilities first reach `top_p`, most likely
/// first. Sorts only as many as needed: the nucleus is usually a few dozen tokens of a vocab
/// of tens of thousands, and a full sort per token would cost more than the forward pass's
/// sampling budget.
fn keep_nucleus(candidates: &mut Vec<(u32, f32)>, top_p: f32) {
    let mut k = 64.min(candidates.len());
    loop {
        if k < candidates.len() {
            candidates.select_nth_unstable_by(k - 1, by_score_desc);
        }
        candidates[..k].sort_unstable_by(by_score_desc);
        let mut mass = 0.0;
        if let Some(i) = candidates[..k].iter().position(|cand| {
            mass += cand.1;
            mass >= top_p
        }) {
            candidates.truncate(i + 1);
            return;
        }
        if k == candidates.len() {
            return;
        }
        k = (k * 4).min(candidates.len());
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    minerva_core::ops::argmax_row(logits) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_penalty() {
        let mut s = Sampler::new(SamplerConfig::default());
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[]), 1);
        let mut s = Sampler::new(SamplerConfig {
            repetition_penalty: 1.5,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 2.0, 1.9], &[1]), 2);
    }

    #[test]
    fn presence_and_frequency_penalties_count_produced_tokens() {
        let logits = [0.0, 1.0, 0.55];
        let mut s = Sampler::new(SamplerConfig {
            presence_penalty: 0.2,
            frequency_penalty: 0.1,
            ..Default::default()
        });
        // Token 1 scores 1.0, then 0.7, 0.6, 0.5 after 0, 1, 2, 3 uses; token 2 stays 0.55.
        let picks: Vec<u32> = (0..4).map(|_| s.sample(&logits, &[])).collect();
        assert_eq!(picks, [1, 1, 1, 2]);
        let mut plain = Sampler::new(SamplerConfig::default());
        assert!((0..5).all(|_| plain.sample(&logits, &[]) == 1));
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let logits = [0.5, 1.0, 0.2, 0.9];
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 1,
            seed: Some(3),
            ..Default::default()
        };
        assert_eq!(Sampler::new(cfg).sample(&logits, &[]), 1);
        let cfg = SamplerConfig {
            temperature: 1.0,
            seed: Some(42),
            ..Default::default()
        };
        let draw = |cfg: &SamplerConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(&cfg), draw(&cfg));
        assert!(
            draw(&cfg).iter().any(|&t| t != 1),
            "sampling at T=1 should not always pick the max"
        );
    }

    #[test]
    fn nucleus_grows_until_the_mass_is_reached() {
        // 1000 equally likely tokens: 0.5 of the mass needs 500 of them (several rounds).
        let mut flat: Vec<(u32, f32)> = (0..1000).map(|i| (i, 0.001)).collect();
        keep_nucleus(&mut flat, 0.5);
        assert!((499..=501).contains(&flat.len()), "{}", flat.len());
        let mut peaked: Vec<(u32, f32)> = (0..1000)
            .map(|i| (i, if i == 7 { 0.95 } else { 0.05 / 999.0 }))
            .collect();
        keep_nucleus(&mut peaked, 0.9);
        assert_eq!(peaked, [(7, 0.95)]);
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let logits = [5.0, 4.9, -10.0, -10.0];
        for cfg in [
            SamplerConfig {
                temperature: 1.0,
                min_p: 0.5,
                seed: Some(1),
                ..Default::default()
            },
            SamplerConfig {
                temperature: 1.0,
                top_p: 0.9,
                seed: Some(1),
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(cfg);
            assert!((0..200).all(|_| s.sample(&logits, &[]) < 2));
        }
    }

    #[test]
    fn device_draws_only_without_penalties_and_repeat_under_a_seed() {
        let greedy = SamplerConfig::default();
        assert!(Sampler::new(greedy).device_draw().is_none());
        let penalised = SamplerConfig {
            temperature: 0.8,
            repetition_penalty: 1.1,
            ..SamplerConfig::default()
        };
        assert!(Sampler::new(penalised).device_draw().is_none());
        let cfg = SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.05,
            seed: Some(5),
            ..SamplerConfig::default()
        };
        let draws = |cfg: &SamplerConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..3).map(|_| s.device_draw().unwrap()).collect::<Vec<_>>()
        };
        let (a, b) = (draws(&cfg), draws(&cfg));
        assert_eq!(a, b);
        let (settings, first) = a[0];
        assert_eq!(
            (settings.top_k, settings.top_p, settings.min_p),
            (40, 0.9, 0.05)
        );
        assert_eq!((first.seed, a[1].1.counter, a[2].1.counter), (5, 1, 2));
    }
}
