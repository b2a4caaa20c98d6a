//! `minerva.toml`: defaults for the global options and for `serve`, which command-line
//! flags and environment variables override. Read from `--config FILE` (or
//! `MINERVA_CONFIG`), else from `$XDG_CONFIG_HOME/minerva/minerva.toml`
//! (`~/.config/minerva/minerva.toml`) when that exists.
//!
//! ```toml
//! model = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
//! device = "cuda"
//! kv_dtype = "int8"
//!
//! [serve]
//! host = "0.0.0.0"
//! port = 8000
//! max_concurrent = 32
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;

use crate::serve::ServeArgs;

/// The file's settings (every key optional; an unknown key is an error).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    model: Option<PathBuf>,
    device: Option<String>,
    kv_dtype: Option<String>,
    graph: Option<String>,
    threads: Option<usize>,
    #[serde(default)]
    serve: ServeDefaults,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeDefaults {
    host: Option<String>,
    port: Option<u16>,
    api_key: Option<String>,
    max_concurrent: Option<usize>,
    kv_pages: Option<usize>,
    no_prefix_cache: Option<bool>,
    max_queue: Option<usize>,
    max_context: Option<usize>,
    model_id: Option<String>,
}

/// The global options a config file may set, as the command line parsed them.
pub struct Globals<'a> {
    pub model: &'a mut Option<PathBuf>,
    pub device: &'a mut String,
    pub kv_dtype: &'a mut String,
    pub graph: &'a mut String,
    pub threads: &'a mut Option<usize>,
}

/// The default config file's place.
fn default_path() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let config = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some(config.join("minerva").join("minerva.toml"))
}

impl ConfigFile {
    /// Reads `explicit`, else the default file where it exists, else nothing.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<ConfigFile> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => match default_path().filter(|p| p.is_file()) {
                Some(path) => path,
                None => return Ok(ConfigFile::default()),
            },
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("config file {}", path.display()))?;
        ConfigFile::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))
    }

    /// Sets every option of `globals` (parsed as `matches`) that neither a flag nor an
    /// environment variable gave and this file does.
    pub fn apply_globals(&self, globals: Globals<'_>, matches: &ArgMatches) -> anyhow::Result<()> {
        if let Some(graph) = self
            .graph
            .as_deref()
            .filter(|g| !matches!(*g, "on" | "off"))
        {
            anyhow::bail!("config file: graph = {graph:?}: expected \"on\" or \"off\"");
        }
        let unset = |id: &str| !given(matches, id);
        set(unset("model"), globals.model, self.model.clone().map(Some));
        set(unset("device"), globals.device, self.device.clone());
        set(unset("kv_dtype"), globals.kv_dtype, self.kv_dtype.clone());
        set(unset("graph"), globals.graph, self.graph.clone());
        set(unset("threads"), globals.threads, self.threads.map(Some));
        Ok(())
    }

    /// The same for `serve`'s options (`matches`: the `serve` subcommand's).
    pub fn apply_serve(&self, args: &mut ServeArgs, matches: &ArgMatches) {
        let s = &self.serve;
        let unset = |id: &str| !given(matches, id);
        set(unset("host"), &mut args.host, s.host.clone());
        set(unset("port"), &mut args.port, s.port);
        set(
            unset("api_key"),
            &mut args.api_key,
            s.api_key.clone().map(Some),
        );
        set(
            unset("max_concurrent"),
            &mut args.max_concurrent,
            s.max_concurrent,
        );
        set(unset("kv_pages"), &mut args.kv_pages, s.kv_pages.map(Some));
        set(
            unset("no_prefix_cache"),
            &mut args.no_prefix_cache,
            s.no_prefix_cache,
        );
        set(unset("max_queue"), &mut args.max_queue, s.max_queue);
        set(
            unset("max_context"),
            &mut args.max_context,
            s.max_context.map(Some),
        );
        set(
            unset("model_id"),
            &mut args.model_id,
            s.model_id.clone().map(Some),
        );
    }
}

/// Whether option `id` came from the command line or the environment.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn set<T>(unset: bool, field: &mut T, value: Option<T>) {
    if let (true, Some(value)) = (unset, value) {
        *field = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = ConfigFile::parse("[serve]\nprot = 80\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `prot`"), "{err}");
        let err = ConfigFile::parse("[serve]\nport = \"eighty\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid type"), "{err}");
        assert!(ConfigFile::parse("").is_ok());
    }
}
