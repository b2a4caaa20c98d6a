//! Building blocks shared by architectures: attention, MLPs, rotary frequencies.

pub mod attention;
pub mod mlp;
pub mod moe;
pub mod rope;

pub use attention::Attention;
pub use mlp::GatedMlp;

use minerva_core::Array;

/// Total bytes of `arrays` (codes and group parameters).
pub(crate) fn bytes_of<'a>(arrays: impl IntoIterator<Item = &'a Array>) -> u64 {
    arrays.into_iter().map(|a| a.nbytes() as u64).sum()
}
