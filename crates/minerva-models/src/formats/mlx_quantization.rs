//! The `quantization` block MLX checkpoints put in `config.json`: global `group_size`, `bits`
//! and `mode`, plus entries keyed by module path that override them (a dict) or mark the
//! module unquantized (`false`).
//!
//! mlx-lm passes a module's entry to `to_quantized(**entry)`, so an entry without `mode` is
//! affine even when the global mode is mxfp4 (mlx-lm writes gpt-oss routers that way).

use std::collections::HashMap;
use std::path::Path;

use minerva_core::DType;
use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// How one module is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpec {
    pub mxfp4: bool,
    pub bits: u32,
    pub group: u32,
}

impl QuantSpec {
    /// The spec a quantized dtype stores.
    pub fn of(dtype: DType) -> Option<QuantSpec> {
        match dtype {
            DType::Mxfp4 => Some(QuantSpec {
                mxfp4: true,
                bits: 4,
                group: 32,
            }),
            DType::Affine { bits, group } => Some(QuantSpec {
                mxfp4: false,
                bits: bits.into(),
                group: group.into(),
            }),
            _ => None,
        }
    }

    /// The array dtype this spec stores.
    pub fn dtype(&self) -> DType {
        match self.mxfp4 {
            true => DType::Mxfp4,
            false => DType::Affine {
                bits: self.bits as u8,
                group: self.group as u16,
            },
        }
    }
}

impl std::fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.mxfp4 { "mxfp4" } else { "affine" };
        write!(f, "{mode} {}-bit group {}", self.bits, self.group)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantizationConfig {
    global: QuantSpec,
    /// Per-module overrides; `None` = not quantized.
    modules: HashMap<String, Option<QuantSpec>>,
}

impl QuantizationConfig {
    /// The block in `config` (`quantization`, else an MLX-style `quantization_config`), if any.
    pub fn from_config(config: &Value, path: &Path) -> Result<Option<QuantizationConfig>> {
        let block = ["quantization", "quantization_config"]
            .iter()
            .find_map(|k| Some((*k, config.get(k)?.as_object()?)))
            .filter(|(_, b)| b.contains_key("group_size") && b.contains_key("bits"));
        let Some((key, block)) = block else {
            return Ok(None);
        };
        let bad = |field: String, message: String| {
            ModelError::config(path, format!("{key}{field}: {message}"))
        };
        let global = spec(block, "affine", &|f, m| bad(f, m), "")?;
        let mut modules = HashMap::new();
        for (name, value) in block {
            let field = format!("['{name}']");
            let entry = match value {
                Value::Object(m) => Some(spec(m, "affine", &|f, msg| bad(f, msg), &field)?),
                Value::Bool(false) => None,
                Value::Bool(true) => Some(global),
                // The global keys, and others such as "quant_method".
                _ => continue,
            };
            modules.insert(name.clone(), entry);
        }
        Ok(Some(QuantizationConfig { global, modules }))
    }

    /// How the module at `path` is quantized (`None`: it is not).
    pub fn module(&self, path: &str) -> Option<QuantSpec> {
        self.modules.get(path).copied().unwrap_or(Some(self.global))
    }
}

/// One `{group_size, bits, mode}` entry, checked against what MLX supports.
fn spec(
    entry: &Map<String, Value>,
    default_mode: &str,
    bad: &dyn Fn(String, String) -> ModelError,
    field: &str,
) -> Result<QuantSpec> {
    let int = |k: &str| -> Result<u32> {
        let v = entry
            .get(k)
            .ok_or_else(|| bad(format!("{field}.{k}"), "missing".into()))?;
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| bad(format!("{field}.{k}"), format!("{v} is not a size")))
    };
    let (bits, group) = (int("bits")?, int("group_size")?);
    let mode = match entry.get("mode") {
        None => default_mode,
        Some(Value::String(m)) => m.as_str(),
        Some(v) => return Err(bad(format!("{field}.mode"), format!("{v} is not a string"))),
    };
    let mxfp4 = match mode {
        "affine" => false,
        "mxfp4" => true,
        other => {
            return Err(bad(
                format!("{field}.mode"),
                format!("'{other}' is not supported (affine or mxfp4)"),
            ))
        }
    };
    if !matches!(bits, 2..=6 | 8) {
        return Err(bad(
            format!("{field}.bits"),
            format!("{bits} is not supported (2, 3, 4, 5, 6 or 8)"),
        ));
    }
    if !matches!(group, 32 | 64 | 128) {
        return Err(bad(
            format!("{field}.group_size"),
            format!("{group} is not supported (32, 64 or 128)"),
        ));
    }
    if mxfp4 && (bits, group) != (4, 32) {
        return Err(bad(
            field.to_string(),
            format!("mxfp4 is 4-bit with group size 32, not {bits}-bit group {group}"),
        ));
    }
    Ok(QuantSpec { mxfp4, bits, group })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Option<QuantizationConfig>> {
        QuantizationConfig::from_config(&v, Path::new("config.json"))
    }

    #[test]
    fn global_overrides_and_missing_mode() {
        let q = parse(serde_json::json!({"quantization": {
            "group_size": 32, "bits": 4, "mode": "mxfp4",
            "model.layers.0.mlp.router": {"group_size": 64, "bits": 8},
            "lm_head": false
        }}))
        .unwrap()
        .unwrap();
        let mxfp4 = QuantSpec {
            mxfp4: true,
            bits: 4,
            group: 32,
        };
        assert_eq!(
            q.module("model.layers.0.mlp.experts.gate_proj"),
            Some(mxfp4)
        );
        // No "mode" in the entry: affine, as mlx-lm's to_quantized defaults.
        assert_eq!(
            q.module("model.layers.0.mlp.router"),
            Some(QuantSpec {
                mxfp4: false,
                bits: 8,
                group: 64
            })
        );
        assert_eq!(q.module("lm_head"), None);
        assert!(parse(serde_json::json!({"vocab_size": 3}))
            .unwrap()
            .is_none());
    }

    #[test]
    fn unsupported_values_name_the_field() {
        let err = |v: Value| parse(v).unwrap_err().to_string();
        let e = err(serde_json::json!({"quantization": {"group_size": 64, "bits": 7}}));
        assert_eq!(
            e,
            "config.json: quantization.bits: 7 is not supported (2, 3, 4, 5, 6 or 8)"
        );
        let e = err(
            serde_json::json!({"quantization": {"group_size": 64, "bits": 4,
            "model.layers.3.self_attn.q_proj": {"group_size": 48, "bits": 4}}}),
        );
        assert!(
            e.contains("quantization['model.layers.3.self_attn.q_proj'].group_size: 48"),
            "{e}"
        );
        let e =
            err(serde_json::json!({"quantization": {"group_size": 64, "bits": 4, "mode": "nf4"}}));
        assert!(
            e.contains("quantization.mode: 'nf4' is not supported"),
            "{e}"
        );
        let e = err(
            serde_json::json!({"quantization": {"group_size": 64, "bits": 4, "mode": "mxfp4"}}),
        );
        assert!(e.contains("mxfp4 is 4-bit with group size 32"), "{e}");
    }
}
