//! Which tensors get quantized, and how: a global setting, per-module rules, and the
//! `"quantization"` block of `config.json` that tells mlx-lm (and Minerva) what was done.
//!
//! Like mlx-lm's `quantize_model`, only the weights of linear layers and embeddings are
//! quantized (here: tensors named `PATH.weight` with two or more axes; norms, biases, sinks
//! and 1-D tensors stay float), and only when their last axis is a whole number of groups.

use std::fmt;

use minerva_core::DType;
use serde_json::{json, Map, Value};

/// How one module's weight is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantSpec {
    Affine { bits: u8, group: u16 },
    Mxfp4,
}

impl QuantSpec {
    pub fn dtype(self) -> DType {
        match self {
            QuantSpec::Affine { bits, group } => DType::Affine { bits, group },
            QuantSpec::Mxfp4 => DType::Mxfp4,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            QuantSpec::Affine { bits, .. } => bits,
            QuantSpec::Mxfp4 => 4,
        }
    }

    pub fn group(self) -> usize {
        self.dtype().block_len()
    }

    /// mlx's parameters object: `{"group_size", "bits", "mode"}`.
    pub fn to_json(self) -> Value {
        let mode = match self {
            QuantSpec::Affine { .. } => "affine",
            QuantSpec::Mxfp4 => "mxfp4",
        };
        json!({"group_size": self.group(), "bits": self.bits(), "mode": mode})
    }

    /// From `--q-mode`, `--q-bits` and `--q-group-size`, with mlx-lm's defaults for a missing
    /// bits or group size (affine 4-bit, group 64; mxfp4 4-bit, group 32).
    pub fn from_parts(mode: &str, bits: Option<u8>, group: Option<u16>) -> Result<Self, String> {
        match mode {
            "affine" => {
                let (bits, group) = (bits.unwrap_or(4), group.unwrap_or(64));
                if !matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) {
                    return Err(format!(
                        "affine bits must be 2, 3, 4, 5, 6 or 8, not {bits}"
                    ));
                }
                if !matches!(group, 32 | 64 | 128) {
                    return Err(format!(
                        "affine group size must be 32, 64 or 128, not {group}"
                    ));
                }
                Ok(QuantSpec::Affine { bits, group })
            }
            "mxfp4" => match (bits.unwrap_or(4), group.unwrap_or(32)) {
                (4, 32) => Ok(QuantSpec::Mxfp4),
                (b, g) => Err(format!(
                    "mxfp4 is 4-bit with group size 32, not {b}-bit with group size {g}"
                )),
            },
            other => Err(format!(
                "unknown quantization mode '{other}' (affine, mxfp4 or none)"
            )),
        }
    }
}

impl fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dtype().name())
    }
}

/// `PATTERN=SPEC`: modules whose path matches PATTERN get SPEC (`None`: stay float).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pattern: String,
    spec: Option<QuantSpec>,
    /// What config.json records for the modules this rule quantizes, when not
    /// [`QuantSpec::to_json`].
    entry: Option<Value>,
}

impl Rule {
    pub fn new(pattern: &str, spec: Option<QuantSpec>) -> Rule {
        Rule {
            pattern: pattern.to_string(),
            spec,
            entry: None,
        }
    }

    /// A rule whose modules config.json records as `entry` (mlx-lm writes what a model's
    /// quant predicate returned, which for gpt-oss's router has no `"mode"`).
    pub fn with_entry(mut self, entry: Value) -> Rule {
        self.entry = Some(entry);
        self
    }

    /// Parses `PATTERN=SPEC`. SPEC is `mxfp4`, `affineB` or `affineBgG` (as `minerva inspect`
    /// names the dtypes: `affine8g64`), or `none` to keep the module float; a missing group
    /// size is `default_group`.
    pub fn parse(text: &str, default_group: Option<u16>) -> Result<Rule, String> {
        let bad = |why: &str| format!("--q-rule '{text}': {why}");
        let Some((pattern, spec)) = text.split_once('=') else {
            return Err(bad("expected PATTERN=SPEC, e.g. experts=mxfp4"));
        };
        if pattern.is_empty() {
            return Err(bad("empty pattern"));
        }
        let spec = match spec {
            "none" | "float" => None,
            "mxfp4" => Some(QuantSpec::Mxfp4),
            s => {
                let Some(rest) = s.strip_prefix("affine") else {
                    return Err(bad(
                        "SPEC must be mxfp4, affineB[gG] (e.g. affine8g64) or none",
                    ));
                };
                let (bits, group) = match rest.split_once('g') {
                    Some((b, g)) => (b, Some(g)),
                    None => (rest, None),
                };
                let bits = bits.parse().map_err(|_| bad("bits must be a number"))?;
                let group = match group {
                    Some(g) => Some(g.parse().map_err(|_| bad("group size must be a number"))?),
                    None => default_group,
                };
                Some(QuantSpec::from_parts("affine", Some(bits), group).map_err(|e| bad(&e))?)
            }
        };
        Ok(Rule::new(pattern, spec))
    }

    /// A pattern with `*` (any run of characters) must match the whole module path; one
    /// without must occur in it (`experts` matches `model.layers.0.mlp.experts.gate_proj`).
    fn matches(&self, path: &str) -> bool {
        if !self.pattern.contains('*') {
            return path.contains(&self.pattern);
        }
        glob(self.pattern.as_bytes(), path.as_bytes())
    }
}

/// `*`-only glob matching (iterative, with backtracking to the last star).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            (p, t) = (p + 1, t + 1);
        } else if let Some((sp, st)) = star {
            (p, t) = (sp + 1, st + 1);
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The quantization plan: the global setting (`None`: keep floats) and rules, first match
/// wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantPlan {
    pub global: Option<QuantSpec>,
    pub rules: Vec<Rule>,
}

impl QuantPlan {
    pub fn none() -> QuantPlan {
        QuantPlan {
            global: None,
            rules: Vec::new(),
        }
    }

    /// What mlx-community publishes as gpt-oss "MXFP4-Q8" (`mlx_lm.convert` of OpenAI's
    /// release with `-q --q-bits 8 --q-group-size 64`): experts MXFP4, every other linear
    /// layer and the embeddings 8-bit affine with group 64 (the router gets that from the
    /// gpt-oss rule every quantized conversion adds, as in mlx-lm).
    pub fn gpt_oss_mxfp4_q8() -> QuantPlan {
        let q8 = Some(QuantSpec::Affine { bits: 8, group: 64 });
        QuantPlan {
            global: Some(QuantSpec::Mxfp4),
            rules: ["self_attn", "embed_tokens", "lm_head"]
                .iter()
                .map(|p| Rule::new(p, q8))
                .collect(),
        }
    }

    /// The spec for module `path` whose weight has `shape`, or `None` to keep it float.
    pub fn choose(&self, path: &str, shape: &[usize]) -> Option<QuantSpec> {
        let spec = match self.rules.iter().find(|r| r.matches(path)) {
            Some(rule) => rule.spec,
            None => self.global,
        }?;
        let k = *shape.last()?;
        (shape.len() >= 2 && k.is_multiple_of(spec.group())).then_some(spec)
    }

    /// mlx-lm's `"quantization"` block: the global parameters, plus an entry for every
    /// quantized module whose parameters differ from them. `None` when nothing was quantized.
    pub fn config_block<'a>(
        &self,
        quantized: impl IntoIterator<Item = (&'a str, QuantSpec)>,
    ) -> Option<Value> {
        let mut block = Map::new();
        let mut any = false;
        for (path, spec) in quantized {
            any = true;
            if Some(spec) != self.global {
                let entry = self.rules.iter().find(|r| r.matches(path));
                let entry = entry.and_then(|r| r.entry.clone());
                block.insert(path.to_string(), entry.unwrap_or_else(|| spec.to_json()));
            }
        }
        if !any {
            return None;
        }
        // With no global setting (only rules), the first module's parameters stand in for
        // it: mlx-lm's loader needs top-level group_size and bits.
        let global = match self.global {
            Some(g) => g.to_json(),
            None => block.values().next()?.clone(),
        };
        if let Value::Object(g) = global {
            block.extend(g);
        }
        Some(Value::Object(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        let r = Rule::parse("experts=mxfp4", None).unwrap();
        assert!(r.matches("model.layers.0.mlp.experts.gate_proj"));
        assert!(!r.matches("model.layers.0.mlp.router"));
        let r = Rule::parse("*.layers.1*=affine4", Some(32)).unwrap();
        assert!(r.matches("model.layers.12.mlp.router"));
        assert_eq!(r.spec, Some(QuantSpec::Affine { bits: 4, group: 32 }));
        let r = Rule::parse("model.layers.*.self_attn.*=affine8g128", None).unwrap();
        assert!(r.matches("model.layers.12.self_attn.q_proj"));
        assert!(!r.matches("model.layers.12.mlp.router"));
        assert_eq!(
            r.spec,
            Some(QuantSpec::Affine {
                bits: 8,
                group: 128
            })
        );
        assert_eq!(Rule::parse("lm_head=none", None).unwrap().spec, None);
        for bad in [
            "experts",
            "=mxfp4",
            "x=affine7",
            "x=affine4g48",
            "x=q4",
            "x=affineg",
        ] {
            assert!(Rule::parse(bad, None).is_err(), "{bad}");
        }
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
    }

    #[test]
    fn plan_follows_mlx_lm() {
        let plan = QuantPlan::gpt_oss_mxfp4_q8();
        let experts = "model.layers.0.mlp.experts.gate_proj";
        assert_eq!(plan.choose(experts, &[4, 64, 64]), Some(QuantSpec::Mxfp4));
        let q8 = QuantSpec::Affine { bits: 8, group: 64 };
        let q_proj = plan.choose("model.layers.0.self_attn.q_proj", &[128, 64]);
        assert_eq!(q_proj, Some(q8));
        // Not whole groups, or not a matrix: stays float.
        assert_eq!(plan.choose("lm_head", &[256, 96]), None);
        assert_eq!(plan.choose(experts, &[64]), None);
        let block = plan
            .config_block([(experts, QuantSpec::Mxfp4), ("lm_head", q8)])
            .unwrap();
        assert_eq!(
            block,
            json!({"group_size": 32, "bits": 4, "mode": "mxfp4",
                   "lm_head": {"group_size": 64, "bits": 8, "mode": "affine"}})
        );
        assert_eq!(QuantPlan::none().config_block([]), None);
        assert!(QuantSpec::from_parts("mxfp4", Some(8), None).is_err());
        assert!(QuantSpec::from_parts("nvfp4", None, None).is_err());
    }
}
