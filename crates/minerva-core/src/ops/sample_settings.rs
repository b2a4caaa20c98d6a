//! How one token is drawn: the settings and the randomness of a draw, as every backend's
//! sampler reads them.

/// The largest top-k the kernels read exactly (as an f32); larger ones act as this.
pub(crate) const MAX_TOP_K: usize = 1 << 24;

/// Temperature (> 0), top-k (0 = off), top-p (1 = off) and min-p (0 = off) of one draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSettings {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
}

impl SampleSettings {
    /// The settings as the kernels read them: `[temperature, top_k, top_p, min_p]`.
    pub fn to_row(&self) -> [f32; 4] {
        [
            self.temperature,
            self.top_k.min(MAX_TOP_K) as f32,
            self.top_p,
            self.min_p,
        ]
    }
}

/// The randomness of one draw: a seed and a counter (the step), hashed with each token id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    pub seed: u64,
    pub counter: u32,
}

impl Draw {
    /// The draw as the kernels read it: seed low word, seed high word, counter.
    pub fn to_row(&self) -> [u32; 3] {
        [self.seed as u32, (self.seed >> 32) as u32, self.counter]
    }
}
