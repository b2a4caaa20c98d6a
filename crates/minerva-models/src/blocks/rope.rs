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
            }
        }
        Rope {
            inv_freq,
            style: self.style,
            mscale: 1.0,
        }
    }
}
