//! Reading HF `config.json` files in the dialects different tools write: transformers
//! before and after v5 (`rope_scaling` + `rope_theta`, or `rope_parameters`), mlx-lm, and
//! OpenAI's own gpt-oss release.

use std::path::Path;

use serde_json::Value;

use crate::blocks::rope::RopeScaling;
use crate::error::{ModelError, Result};

pub struct HfJson<'a> {
    pub path: &'a Path,
    pub json: Value,
}

impl<'a> HfJson<'a> {
    pub fn read(path: &'a Path) -> Result<HfJson<'a>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ModelError::config(path, e.to_string()))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::config(path, format!("invalid JSON: {e}")))?;
        if !json.is_object() {
            return Err(ModelError::config(path, "expected a JSON object"));
        }
        Ok(HfJson { path, json })
    }

    /// A present, non-null field.
    pub fn field(&self, k: &str) -> Option<&Value> {
        self.json.get(k).filter(|v| !v.is_null())
    }

    pub fn error(&self, message: impl Into<String>) -> ModelError {
        ModelError::config(self.path, message)
    }

    pub fn int(&self, k: &str) -> Result<usize> {
        self.opt_int(k)?
            .ok_or_else(|| self.error(format!("field '{k}' is missing or not an integer")))
    }

    pub fn opt_int(&self, k: &str) -> Result<Option<usize>> {
        match self.field(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|v| Some(v as usize))
                .ok_or_else(|| self.error(format!("field '{k}' is not a non-negative integer"))),
        }
    }

    pub fn float(&self, k: &str, default: f64) -> Result<f32> {
        match self.field(k) {
            None => Ok(default as f32),
            Some(v) => v
                .as_f64()
                .map(|v| v as f32)
                .ok_or_else(|| self.error(format!("field '{k}' is not a number"))),
        }
    }

    pub fn bool(&self, k: &str) -> Option<bool> {
        self.field(k).and_then(Value::as_bool)
    }

    pub fn model_type(&self) -> Result<&str> {
        self.field("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.error("field 'model_type' is missing"))
    }

    /// RoPE base and scaling: `rope_scaling` (+ top-level `rope_theta`) or transformers v5's
    /// `rope_parameters` (which carries `rope_theta` itself).
    pub fn rope(&self) -> Result<(f32, RopeScaling)> {
        let params = self
            .field("rope_scaling")
            .or_else(|| self.field("rope_parameters"));
        let theta = match params
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
        {
            Some(t) => t as f32,
            None => self.float("rope_theta", 10_000.0)?,
        };
        let Some(r) = params else {
            return Ok((theta, RopeScaling::None));
        };
        let get = |k: &str| r.get(k).and_then(Value::as_f64).map(|v| v as f32);
        let need = |k: &str| {
            get(k).ok_or_else(|| self.error(format!("rope_scaling.{k} is missing or not a number")))
        };
        let kind = r
            .get("rope_type")
            .or_else(|| r.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: need("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_context: need("original_max_position_embeddings")?,
            },
            "yarn" => RopeScaling::Yarn {
                factor: need("factor")?,
                original_context: match get("original_max_position_embeddings") {
                    Some(c) => c,
                    None => self.int("max_position_embeddings")? as f32,
                },
                beta_fast: get("beta_fast").unwrap_or(32.0),
                beta_slow: get("beta_slow").unwrap_or(1.0),
                // transformers' default; OpenAI's gpt-oss config sets it to false.
                truncate: r.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                attention_factor: get("attention_factor"),
            },
            other => return Err(self.error(format!("unsupported rope_scaling type '{other}'"))),
        };
        Ok((theta, scaling))
    }
}
