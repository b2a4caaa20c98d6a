//! Rotary embedding frequencies and their context-extension scalings.

use minerva_core::ops::{Rope, RopeStyle};

/// How a checkpoint stretches RoPE beyond its training context.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: f32,
    },
    /// YaRN (Peng et al. 2023, as transformers implements it): frequencies that turn fewer
    /// than `beta_slow` times over the original context are interpolated (divided by
    /// `factor`), those turning more than `beta_fast` times are kept, a linear ramp between;
    /// cos and sin are scaled by `attention_factor` (default `0.1 ln(factor) + 1`).
    Yarn {
        factor: f32,
        original_context: f32,
        beta_fast: f32,
        beta_slow: f32,
        /// Round the ramp's ends to whole dimensions.
        truncate: bool,
        attention_factor: Option<f32>,
    },
}

/// Everything needed to build a [`Rope`].
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f32,
    /// Rotated dimensions per head (the head dim unless the model uses partial rotary).
    pub dim: usize,
    pub scaling: RopeScaling,
    pub style: RopeStyle,
}

impl RopeConfig {
    /// The per-pair inverse frequencies `theta^(-2i/dim)`, scaled; `freq_factors` (GGUF's
    /// `rope_freqs.weight`, already-computed divisors) replaces the scaling rule when present.
    pub fn build(&self, freq_factors: Option<&[f32]>) -> Rope {
        let half = self.dim / 2;
        let mut inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / self.theta.powf((2 * i) as f32 / self.dim as f32))
            .collect();
        let mut mscale = 1.0;
        if let Some(factors) = freq_factors {
            inv_freq.iter_mut().zip(factors).for_each(|(f, d)| *f /= d);
        } else {
            match self.scaling {
                RopeScaling::None => {}
                RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_context,
                } => {
                    let low_wavelen = original_context / low_freq_factor;
                    let high_wavelen = original_context / high_freq_factor;
                    for f in &mut inv_freq {
                        let wavelen = 2.0 * std::f32::consts::PI / *f;
                        if wavelen > low_wavelen {
                            *f /= factor;
                        } else if wavelen >= high_wavelen {
                            let smooth = (original_context / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            *f = (1.0 - smooth) * *f / factor + smooth * *f;
                        }
                    }
                }
                RopeScaling::Yarn {
                    factor,
                    original_context,
                    beta_fast,
                    beta_slow,
                    truncate,
                    attention_factor,
                } => {
                    // The dimension whose frequency turns `turns` times over the context.
                    let dim_for = |turns: f32| {
                        self.dim as f32
                            * (original_context / (turns * 2.0 * std::f32::consts::PI)).ln()
                            / (2.0 * self.theta.ln())
                    };
                    let (mut low, mut high) = (dim_for(beta_fast), dim_for(beta_slow));
                    if truncate {
                        (low, high) = (low.floor(), high.ceil());
                    }
                    let (low, high) = (low.max(0.0), high.min(self.dim as f32 - 1.0));
                    let span = if low == high { 0.001 } else { high - low };
                    for (i, f) in inv_freq.iter_mut().enumerate() {
                        // 1 keeps the original frequency, 0 interpolates it fully.
                        let keep = 1.0 - ((i as f32 - low) / span).clamp(0.0, 1.0);
                        *f = *f / factor * (1.0 - keep) + *f * keep;
                    }
                    mscale = attention_factor.unwrap_or(if factor <= 1.0 {
                        1.0
                    } else {
                        0.1 * factor.ln() + 1.0
                    });
                }
            }
        }
        Rope {
            inv_freq,
            style: self.style,
            mscale,
        }
    }
}
