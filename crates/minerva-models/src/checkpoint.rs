//! A checkpoint's tensors as `Array`s, whatever file format holds them.

use std::path::Path;

use minerva_core::{Array, DType};

use crate::error::{ModelError, Result};
use crate::formats::gguf::GgufFile;
use crate::formats::mlx_quantization::QuantSpec;
use crate::formats::safetensors::SafetensorsModel;
use crate::formats::TensorInfo;

pub enum Checkpoint {
    Gguf(GgufFile),
    Safetensors(SafetensorsModel),
}

impl Checkpoint {
    /// The file to name in errors (the GGUF file, or the first safetensors file).
    pub fn path(&self) -> &Path {
        match self {
            Checkpoint::Gguf(g) => g.path(),
            Checkpoint::Safetensors(s) => s.files().first().map_or(Path::new("?"), |(p, _)| p),
        }
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        match self {
            Checkpoint::Gguf(g) => g.tensor(name),
            Checkpoint::Safetensors(s) => s.tensor(name),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.info(name).is_some()
    }

    fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.info(name).ok_or_else(|| ModelError::MissingTensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
        })
    }

    fn tensor_error(&self, name: &str, message: String) -> ModelError {
        ModelError::Tensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
            message,
        }
    }

    fn check_shape(&self, info: &TensorInfo, shape: &[usize]) -> Result<()> {
        if info.shape != shape {
            return Err(self.tensor_error(
                &info.name,
                format!("has shape {:?}, expected {shape:?}", info.shape),
            ));
        }
        Ok(())
    }

    /// A weight matrix of `shape`, borrowed from the mapping in its stored dtype (dense or
    /// block-quantized). f32 data that is not 4-byte aligned in the file is copied.
    pub fn matrix(&self, name: &str, shape: [usize; 2]) -> Result<Array> {
        self.weight(name, &shape)
    }

    /// A weight of `shape` (a matrix, or `[experts, out, in]`), borrowed from the mapping in
    /// its stored dtype. An MLX-quantized weight (`NAME` as packed u32 codes beside
    /// `PREFIX.scales` and, for affine, `PREFIX.biases`, where NAME is `PREFIX.weight`) comes
    /// back as one quantized array; its bits and group size follow from the shapes.
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<Array> {
        let info = self.require(name)?;
        if info.dtype == DType::U32 {
            if let Some(prefix) = name.strip_suffix(".weight") {
                return self.mlx_quantized(info, prefix, shape);
            }
        }
        self.check_shape(info, shape)?;
        match info.dtype {
            DType::F16 | DType::BF16 | DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => {}
            DType::F32 if info.offset % 4 == 0 => {}
            DType::F32 => return self.vector_like(info, shape),
            other => {
                return Err(self.tensor_error(
                    name,
                    format!("has dtype {other}, which is not a weight type"),
                ))
            }
        }
        Ok(Array::from_mapped(
            info.map.clone(),
            info.offset,
            info.dtype,
            shape,
        )?)
    }

    fn mlx_quantized(&self, codes: &TensorInfo, prefix: &str, shape: &[usize]) -> Result<Array> {
        let scales_name = format!("{prefix}.scales");
        let scales = self.require(&scales_name)?;
        let biases_name = format!("{prefix}.biases");
        let biases = self.info(&biases_name);
        let (Some((&k, outer)), Some(&packed)) = (shape.split_last(), codes.shape.last()) else {
            return Err(self.tensor_error(&codes.name, "has no shape".into()));
        };
        let fail = |message: String| Err(self.tensor_error(&codes.name, message));
        if codes.shape[..codes.shape.len() - 1] != *outer
            || scales.shape.len() != shape.len()
            || scales.shape[..outer.len()] != *outer
        {
            return fail(format!(
                "codes {:?} and scales {:?} do not fit the expected shape {shape:?}",
                codes.shape, scales.shape
            ));
        }
        let groups = scales.shape[outer.len()];
        let bits = packed * 32 / k.max(1);
        let group = k.checked_div(groups).unwrap_or(0);
        if packed * 32 != bits * k || groups * group != k {
            return fail(format!(
                "codes {:?} / scales {:?} do not divide the {k} inputs into whole groups",
                codes.shape, scales.shape
            ));
        }
        if !matches!(group, 32 | 64 | 128) {
            return fail(format!(
                "group size {group} is not supported (32, 64 or 128)"
            ));
        }
        let dtype = match biases {
            Some(_) if matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) => DType::Affine {
                bits: bits as u8,
                group: group as u16,
            },
            Some(_) => return fail(format!("{bits}-bit affine codes are not supported (2-6 or 8)")),
            None if bits == 4 && group == 32 && scales.dtype == DType::U8 => DType::Mxfp4,
            None => {
                return fail(format!(
                    "no {biases_name}: not affine, and {bits}-bit / group {group} / {} scales is not mxfp4",
                    scales.dtype
                ))
            }
        };
        if let Checkpoint::Safetensors(model) = self {
            if let Some(q) = model.quantization() {
                let held = QuantSpec::of(dtype).expect("a quantized dtype");
                match q.module(prefix) {
                    Some(spec) if spec == held => {}
                    Some(spec) => {
                        return fail(format!(
                            "holds {held} codes but config.json's quantization says {spec} for {prefix}"
                        ))
                    }
                    None => {
                        return fail(format!(
                            "is quantized ({held}) but config.json's quantization marks {prefix} unquantized"
                        ))
                    }
                }
            }
        }
        let codes =
            Array::from_mapped(codes.map.clone(), codes.offset, DType::U8, &[codes.nbytes])?;
        let params = |info: &TensorInfo| {
            Array::from_mapped(info.map.clone(), info.offset, info.dtype, &info.shape)
        };
        let biases = biases.map(params).transpose()?;
        let array = Array::quantized(&codes, dtype, shape, params(scales)?, biases)
            .map_err(|e| self.tensor_error(prefix, e.to_string()))?;
        Ok(array)
    }

    /// OpenAI's MXFP4 layout: `NAME_blocks` (`[.., out, in / 32, 16]` bytes of e2m1 pairs)
    /// and `NAME_scales` (`[.., out, in / 32]` e8m0), as one `[.., out, in]` array.
    pub fn mxfp4_blocks(&self, name: &str, shape: &[usize]) -> Result<Array> {
        let (blocks_name, scales_name) = (format!("{name}_blocks"), format!("{name}_scales"));
        let (blocks, scales) = (self.require(&blocks_name)?, self.require(&scales_name)?);
        let Some((&k, outer)) = shape.split_last() else {
            return Err(self.tensor_error(&blocks_name, "empty expected shape".into()));
        };
        let mut want_blocks = outer.to_vec();
        want_blocks.extend([k / 32, 16]);
        self.check_shape(blocks, &want_blocks)?;
        let mut want_scales = outer.to_vec();
        want_scales.push(k / 32);
        self.check_shape(scales, &want_scales)?;
        if blocks.dtype != DType::U8 || scales.dtype != DType::U8 {
            return Err(
                self.tensor_error(&blocks_name, "MXFP4 blocks and scales must be u8".into())
            );
        }
        let codes = Array::from_mapped(
            blocks.map.clone(),
            blocks.offset,
            DType::U8,
            &[blocks.nbytes],
        )?;
        let scales =
            Array::from_mapped(scales.map.clone(), scales.offset, DType::U8, &want_scales)?;
        Array::quantized(&codes, DType::Mxfp4, shape, scales, None)
            .map_err(|e| self.tensor_error(&blocks_name, e.to_string()))
    }

    /// A small tensor (norm weight, bias) as an owned f32 array of `shape`.
    pub fn f32_tensor(&self, name: &str, shape: &[usize]) -> Result<Array> {
        let info = self.require(name)?;
        self.check_shape(info, shape)?;
        self.vector_like(info, shape)
    }

    /// `f32_tensor` when the tensor exists, `None` when it does not.
    pub fn optional_f32(&self, name: &str, shape: &[usize]) -> Result<Option<Array>> {
        if self.contains(name) {
            self.f32_tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    fn vector_like(&self, info: &TensorInfo, shape: &[usize]) -> Result<Array> {
        if matches!(info.dtype, DType::I32 | DType::U8 | DType::U32) {
            return Err(self.tensor_error(
                &info.name,
                format!("has dtype {}, expected floats", info.dtype),
            ));
        }
        let mapped = Array::from_mapped(info.map.clone(), info.offset, info.dtype, shape)?;
        Ok(Array::from_f32(&mapped.to_f32_vec()?, shape)?)
    }
}
