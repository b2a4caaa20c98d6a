//! Building blocks shared by architectures: attention, MLPs, rotary frequencies.

pub mod attention;
pub mod mlp;
pub mod moe;
pub mod rope;

pub use attention::Attention;
pub use mlp::GatedMlp;
