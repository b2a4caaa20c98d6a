//! The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.

use minerva_core::ops;
use minerva_core::{Array, Result};

pub struct GatedMlp {
    pub gate: Array,
    pub up: Array,
    pub down: Array,
}

impl GatedMlp {
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let gated = ops::swiglu(
            &ops::linear(x, &self.gate, None)?,
            &ops::linear(x, &self.up, None)?,
        )?;
        ops::linear(&gated, &self.down, None)
    }
}
