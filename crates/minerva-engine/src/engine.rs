//! `Engine`: a loaded model with its tokenizer and chat template — the entry point an
//! application embeds.

use std::path::Path;
use std::time::{Duration, Instant};

use minerva_core::Device;
use minerva_models::chat_template::ChatTemplate;
use minerva_models::harmony::Harmony;
use minerva_models::loader::{self, LoadedModel, ModelFiles};
use minerva_models::messages::{ChatMessage, ChatOptions};
use minerva_models::tokenizer::Tokenizer;
use minerva_models::CausalLm;

use crate::error::Result;
use crate::generate::Session;
use crate::kv_cache::KvConfig;
use crate::reply::Reply;

pub struct Engine {
    loaded: LoadedModel,
    load_time: Duration,
    kv: KvConfig,
}

impl Engine {
    /// Loads a GGUF file, a safetensors file or a model directory (by mmap).
    pub fn load(path: &Path) -> Result<Engine> {
        Engine::load_on(path, Device::Cpu, &mut |_, _| {})
    }

    /// Loads a model and moves its weights to `device`, reporting `progress(bytes_done,
    /// bytes_total)` while they upload.
    pub fn load_on(
        path: &Path,
        device: Device,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Engine> {
        let start = Instant::now();
        let mut loaded = loader::load(path)?;
        if device != Device::Cpu {
            loaded.model.to_device(device, progress)?;
        }
        Ok(Engine {
            loaded,
            load_time: start.elapsed(),
            kv: KvConfig::default(),
        })
    }

    pub fn model(&self) -> &dyn CausalLm {
        self.loaded.model.as_ref()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.loaded.tokenizer
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.loaded.template
    }

    pub fn files(&self) -> &ModelFiles {
        &self.loaded.files
    }

    /// Wall time `load` took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// How sessions store their KV caches (f16 pages of 16 unless set).
    pub fn kv_config(&self) -> KvConfig {
        self.kv
    }

    pub fn set_kv_config(&mut self, kv: KvConfig) {
        self.kv = kv;
    }

    /// A fresh conversation state; `max_context` caps the KV cache (default: the model's).
    pub fn session(&self, max_context: Option<usize>) -> Result<Session<'_>> {
        Session::new(self.model(), self.tokenizer(), max_context, self.kv)
    }

    /// The harmony encoding, when the model chats in harmony (gpt-oss).
    pub fn harmony(&self) -> Option<&Harmony> {
        self.loaded.harmony.as_ref()
    }

    /// Prompt tokens for a conversation with the assistant's turn opened: rendered in
    /// harmony for gpt-oss, else through the chat template.
    pub fn encode_chat(&self, messages: &[ChatMessage], options: &ChatOptions) -> Result<Vec<u32>> {
        if let Some(harmony) = self.harmony() {
            return Ok(harmony.render(messages, options)?);
        }
        let text = self.template().render_with(messages, options, true)?;
        self.encode_with_bos(&text, true)
    }

    /// A reader for the reply to a prompt from [`encode_chat`](Self::encode_chat), splitting
    /// reasoning and tool calls from the answer.
    pub fn reply(&self) -> Reply {
        match self.harmony() {
            Some(h) => Reply::Harmony(Box::new(h.reply())),
            None => Reply::Plain,
        }
    }

    /// Prompt tokens for raw text (no template); special-token text stays plain text.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with_bos(text, false)
    }

    fn encode_with_bos(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let tok = self.tokenizer();
        let mut ids = tok.encode(text, parse_special)?;
        if let Some(bos) = tok.bos_id().filter(|_| tok.add_bos()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }
}
