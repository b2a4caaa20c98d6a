//! Finds and opens a model: a GGUF file, a safetensors file, or a model directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::arch::gpt_oss::GptOss;
use crate::arch::llama::Llama;
use crate::arch::CausalLm;
use crate::chat_template::ChatTemplate;
use crate::checkpoint::Checkpoint;
use crate::config::hf::HfJson;
use crate::config::{LlamaConfig, ModelConfig};
use crate::error::{ModelError, Result};
use crate::formats::gguf::GgufFile;
use crate::formats::mlx_quantization::QuantizationConfig;
use crate::formats::safetensors::SafetensorsModel;
use crate::formats::FormatError;
use crate::harmony::Harmony;
use crate::tokenizer::Tokenizer;

/// What a model path turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelFiles {
    Gguf(PathBuf),
    /// Weights (file, index or directory) and the directory holding `config.json` and
    /// tokenizer files.
    Safetensors {
        weights: PathBuf,
        dir: PathBuf,
    },
}

impl ModelFiles {
    /// Classifies `path`; errors name the path and what was expected.
    pub fn locate(path: &Path) -> Result<ModelFiles> {
        let meta = std::fs::metadata(path).map_err(|source| FormatError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            if path.join("config.json").is_file() {
                return Ok(ModelFiles::Safetensors {
                    weights: path.to_path_buf(),
                    dir: path.to_path_buf(),
                });
            }
            let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| FormatError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
                .collect();
            return match ggufs.as_slice() {
                [one] => Ok(ModelFiles::Gguf(one.clone())),
                [] => Err(FormatError::invalid(
                    path,
                    "no model here: expected config.json with safetensors weights, or a .gguf file",
                )
                .into()),
                _ => Err(FormatError::invalid(path, "several .gguf files here: name one").into()),
            };
        }
        let mut magic = [0u8; 4];
        let read = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut magic))
            .map_err(|source| FormatError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 4 && &magic == b"GGUF" {
            return Ok(ModelFiles::Gguf(path.to_path_buf()));
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json") {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            return Ok(ModelFiles::Safetensors {
                weights: path.to_path_buf(),
                dir: dir.to_path_buf(),
            });
        }
        Err(FormatError::invalid(
            path,
            "not a model: expected a GGUF file, a .safetensors file or a model directory",
        )
        .into())
    }
}

/// Opens the weights of `files` (by mmap) and reads their configuration.
pub fn open_checkpoint(files: &ModelFiles) -> Result<(Checkpoint, ModelConfig)> {
    match files {
        ModelFiles::Gguf(path) => {
            let gguf = GgufFile::open(path)?;
            let config = ModelConfig::Llama(LlamaConfig::from_gguf(&gguf)?);
            Ok((Checkpoint::Gguf(gguf), config))
        }
        ModelFiles::Safetensors { weights, dir } => {
            let config_path = dir.join("config.json");
            if !config_path.is_file() {
                return Err(ModelError::config(
                    &config_path,
                    "missing: safetensors weights need a config.json beside them",
                ));
            }
            let json = HfJson::read(&config_path)?;
            let config = ModelConfig::from_hf(&json)?;
            let quantization = QuantizationConfig::from_config(&json.json, &config_path)?;
            let model = SafetensorsModel::open(weights)?.with_quantization(quantization);
            Ok((Checkpoint::Safetensors(model), config))
        }
    }
}

/// Loads the model at `path` (weights and config; no tokenizer).
pub fn load_model(path: &Path) -> Result<Box<dyn CausalLm>> {
    let (checkpoint, config) = open_checkpoint(&ModelFiles::locate(path)?)?;
    build(&checkpoint, config)
}

/// The architecture `config` names, with its weights taken from `checkpoint`.
pub fn build(checkpoint: &Checkpoint, config: ModelConfig) -> Result<Box<dyn CausalLm>> {
    Ok(match config {
        ModelConfig::Llama(c) => Box::new(Llama::load(checkpoint, c)?),
        ModelConfig::GptOss(c) => Box::new(GptOss::load(checkpoint, c)?),
    })
}

/// A model ready to chat: weights, tokenizer and chat format.
pub struct LoadedModel {
    pub model: Box<dyn CausalLm>,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// gpt-oss with its o200k_harmony vocabulary chats in harmony, not through the template.
    pub harmony: Option<Harmony>,
    pub files: ModelFiles,
}

/// o200k_harmony's vocabulary size (gpt-oss's `vocab_size`).
const O200K_VOCAB: usize = 201_088;

/// Whether `tokenizer` spells harmony's markup tokens with o200k_harmony's ids (the ids
/// `openai-harmony` renders and parses).
fn speaks_harmony(tokenizer: &Tokenizer) -> bool {
    [
        (200005, "<|channel|>"),
        (200006, "<|start|>"),
        (200008, "<|message|>"),
    ]
    .iter()
    .all(|&(id, text)| tokenizer.id_to_token(id).as_deref() == Some(text))
}

/// Loads the model at `path` with its tokenizer (GGUF metadata or `tokenizer.json`) and chat
/// template (the checkpoint's own, else ChatML).
pub fn load(path: &Path) -> Result<LoadedModel> {
    let files = ModelFiles::locate(path)?;
    let (checkpoint, config) = open_checkpoint(&files)?;
    let mut harmony = None;
    let tokenizer = match (&checkpoint, &files) {
        (Checkpoint::Gguf(gguf), _) => Tokenizer::from_gguf_metadata(gguf.metadata())?,
        (_, ModelFiles::Safetensors { dir, .. }) => {
            let path = dir.join("tokenizer.json");
            match &config {
                // OpenAI's original gpt-oss layout ships no tokenizer.json: its tokenizer is
                // o200k_harmony, which openai-harmony carries.
                ModelConfig::GptOss(c) if !path.exists() && c.vocab == O200K_VOCAB => {
                    let h = Harmony::load()?;
                    let tokenizer = Tokenizer::o200k_harmony(&h)?;
                    harmony = Some(h);
                    tokenizer
                }
                _ => Tokenizer::from_file(&path)?,
            }
        }
        (Checkpoint::Safetensors(_), ModelFiles::Gguf(_)) => {
            unreachable!("checkpoint follows files")
        }
    };
    if harmony.is_none() && matches!(config, ModelConfig::GptOss(_)) && speaks_harmony(&tokenizer) {
        harmony = Some(Harmony::load()?);
    }
    let model = build(&checkpoint, config)?;
    let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id));
    let template = match tokenizer.chat_template() {
        Some(source) => ChatTemplate::new(
            source,
            token_text(tokenizer.bos_id()),
            token_text(tokenizer.eos_id()),
        )?,
        None => ChatTemplate::chatml(),
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        template,
        harmony,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_names_the_file() {
        let err = ModelFiles::locate(Path::new("/no/such/model.gguf"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/no/such/model.gguf: "), "{err}");
        assert!(!err.contains('\n'));
    }
}
