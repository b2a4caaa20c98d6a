//! From a source checkpoint's tensors to the tensors an MLX checkpoint holds: names, shapes,
//! and how to produce each one's values.
//!
//! Llama-family checkpoints keep their names (mlx-lm reads transformers' names). gpt-oss in
//! transformers' layout stores its experts input-major with gate and up interleaved on the
//! last axis (`mlp.experts.gate_up_proj` `[E, hidden, 2I]`, `down_proj` `[E, I, hidden]`);
//! mlx-lm wants separate `[E, out, in]` matrices (`experts.{gate,up,down}_proj.weight`) and
//! cannot convert that layout itself (see `tests/fixtures/tiny-gpt-oss-mlx/LAYOUT.md`).

use std::borrow::Cow;

use minerva_core::DType;

use crate::formats::TensorInfo;

/// Which columns of a source tensor's last axis to take (`start`, `start + step`, ...), and
/// whether to swap its last two axes afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns {
    pub start: usize,
    pub step: usize,
    pub transpose: bool,
}

/// One output tensor before quantization: a name, its float shape, and where it comes from.
#[derive(Clone, Debug)]
pub struct Item {
    pub name: String,
    pub shape: Vec<usize>,
    pub source: TensorInfo,
    /// `None`: the source tensor as it is.
    pub columns: Option<Columns>,
}

impl Item {
    fn whole(name: &str, source: &TensorInfo) -> Item {
        Item {
            name: name.to_string(),
            shape: source.shape.clone(),
            source: source.clone(),
            columns: None,
        }
    }

    fn columns(name: String, source: &TensorInfo, columns: Columns) -> Item {
        let mut shape = source.shape.clone();
        let rank = shape.len();
        shape[rank - 1] = (shape[rank - 1] - columns.start).div_ceil(columns.step);
        if columns.transpose {
            shape.swap(rank - 2, rank - 1);
        }
        Item {
            name,
            shape,
            source: source.clone(),
            columns: Some(columns),
        }
    }

    /// The values in the source dtype, row-major in `shape`.
    pub fn bytes(&self) -> Cow<'_, [u8]> {
        let src = self.source.bytes();
        let Some(c) = self.columns else {
            return Cow::Borrowed(src);
        };
        let size = self.source.dtype.block_bytes();
        let rank = self.source.shape.len();
        let (rows, cols) = (self.source.shape[rank - 2], self.source.shape[rank - 1]);
        let picked = (cols - c.start).div_ceil(c.step);
        let mut out = vec![0u8; src.len() / cols * picked];
        for (src, dst) in src
            .chunks_exact(rows * cols * size)
            .zip(out.chunks_exact_mut(rows * picked * size))
        {
            for r in 0..rows {
                for (j, col) in (c.start..cols).step_by(c.step).enumerate() {
                    let at = if c.transpose {
                        j * rows + r
                    } else {
                        r * picked + j
                    };
                    let from = (r * cols + col) * size;
                    dst[at * size..(at + 1) * size].copy_from_slice(&src[from..from + size]);
                }
            }
        }
        Cow::Owned(out)
    }
}

/// The output tensors for a checkpoint of `model_type`; an error names a tensor that does
/// not fit the layout.
pub fn items(model_type: &str, tensors: &[TensorInfo]) -> Result<Vec<Item>, (String, String)> {
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        // Rotary tables are recomputed from the config; mlx-lm drops them too.
        if t.name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        if model_type == "gpt_oss" {
            if let Some(prefix) = t.name.strip_suffix("mlp.experts.gate_up_proj_blocks") {
                return Err((
                    t.name.clone(),
                    format!(
                        "is OpenAI's MXFP4 release layout ({prefix}mlp.experts.*_blocks); \
                         convert reads dense bf16/f32 experts (transformers' layout)"
                    ),
                ));
            }
            if let Some(items) = gpt_oss_experts(t)? {
                out.extend(items);
                continue;
            }
        }
        out.push(Item::whole(&t.name, t));
    }
    Ok(out)
}

/// transformers' gpt-oss experts as MLX's, or `None` for any other tensor.
fn gpt_oss_experts(t: &TensorInfo) -> Result<Option<Vec<Item>>, (String, String)> {
    let Some((prefix, part)) = t.name.rsplit_once("mlp.experts.") else {
        return Ok(None);
    };
    let experts = |p: &str| format!("{prefix}mlp.experts.{p}");
    let (rank, interleaved) = match part {
        "gate_up_proj" => (3, true),
        "gate_up_proj_bias" => (2, true),
        "down_proj" => (3, false),
        "down_proj_bias" => (2, false),
        _ => return Ok(None),
    };
    let dense = matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16);
    let odd = interleaved && t.shape.last().is_some_and(|d| !d.is_multiple_of(2));
    if t.shape.len() != rank || !dense || odd || t.shape.contains(&0) {
        return Err((
            t.name.clone(),
            format!(
                "has {} {:?}; transformers' gpt-oss layout has {rank} non-empty axes of floats{}",
                t.dtype,
                t.shape,
                if interleaved { ", the last even" } else { "" }
            ),
        ));
    }
    let transpose = rank == 3;
    let field = if transpose { "weight" } else { "bias" };
    let items = if interleaved {
        ["gate_proj", "up_proj"]
            .iter()
            .enumerate()
            .map(|(start, proj)| {
                let columns = Columns {
                    start,
                    step: 2,
                    transpose,
                };
                Item::columns(experts(&format!("{proj}.{field}")), t, columns)
            })
            .collect()
    } else {
        let columns = Columns {
            start: 0,
            step: 1,
            transpose,
        };
        vec![Item::columns(
            experts(&format!("down_proj.{field}")),
            t,
            columns,
        )]
    };
    Ok(Some(items))
}
