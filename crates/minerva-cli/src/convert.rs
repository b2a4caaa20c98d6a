//! `minerva convert`: an HF safetensors checkpoint into an MLX checkpoint (quantized as
//! `mx.quantize` does, laid out as `mlx_lm.convert` writes it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use minerva_core::DType;
use minerva_models::convert::{convert as run_convert, ConvertOptions, QuantPlan, QuantSpec, Rule};

#[derive(Args)]
pub struct ConvertArgs {
    /// Output directory (must not exist; written in a staging directory, then renamed)
    #[arg(long)]
    pub out: PathBuf,
    /// Bits per weight of affine quantization: 2, 3, 4, 5, 6 or 8 [default: 4]
    #[arg(long)]
    pub q_bits: Option<u8>,
    /// Values per scale (and bias): 32, 64 or 128 [default: 64 affine, 32 mxfp4]
    #[arg(long)]
    pub q_group_size: Option<u16>,
    /// Quantization of every linear layer and embedding no --q-rule matches: affine, mxfp4,
    /// or none (keep floats) [default: affine when any --q-* option is given; without any,
    /// gpt-oss becomes MXFP4-Q8 (experts mxfp4, the rest affine8g64) and others stay float]
    #[arg(long)]
    pub q_mode: Option<String>,
    /// PATTERN=SPEC, repeatable, first match wins: modules whose path contains PATTERN (or,
    /// with `*`, matches it whole) get SPEC: mxfp4, `affineB[gG]` (e.g. affine8g64) or none.
    /// Example: --q-rule experts=mxfp4 --q-bits 8
    #[arg(long = "q-rule")]
    pub q_rules: Vec<String>,
    /// Float dtype of the output: float32, float16 or bfloat16 [default: the config's
    /// torch_dtype, as mlx_lm.convert; else as stored]
    #[arg(long)]
    pub dtype: Option<String>,
}

fn plan(args: &ConvertArgs) -> anyhow::Result<Option<QuantPlan>> {
    let any = args.q_bits.is_some()
        || args.q_group_size.is_some()
        || args.q_mode.is_some()
        || !args.q_rules.is_empty();
    if !any {
        return Ok(None);
    }
    let global = match args.q_mode.as_deref().unwrap_or("affine") {
        "none" => None,
        mode => Some(
            QuantSpec::from_parts(mode, args.q_bits, args.q_group_size)
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let rules = args
        .q_rules
        .iter()
        .map(|r| Rule::parse(r, args.q_group_size))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    Ok(Some(QuantPlan { global, rules }))
}

fn dtype(name: &str) -> anyhow::Result<DType> {
    Ok(match name {
        "float32" | "f32" => DType::F32,
        "float16" | "f16" => DType::F16,
        "bfloat16" | "bf16" => DType::BF16,
        other => bail!("--dtype {other}: expected float32, float16 or bfloat16"),
    })
}

pub fn convert(model: Option<&Path>, args: &ConvertArgs) -> anyhow::Result<()> {
    let Some(src) = model else {
        bail!("convert needs --model SRC (an HF safetensors model directory)");
    };
    let mut options = ConvertOptions::new(src, &args.out);
    options.plan = plan(args)?;
    options.dtype = args.dtype.as_deref().map(dtype).transpose()?;
    let start = Instant::now();
    let summary = run_convert(&options)?;
    eprintln!(
        "{}: {} tensors ({} quantized modules), {:.1} MB, {} parameters, in {:.1} s",
        args.out.display(),
        summary.tensors,
        summary.quantized_modules,
        summary.bytes as f64 / 1e6,
        summary.parameters,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
