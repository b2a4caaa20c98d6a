//! Pre-tokenizers for GGUF byte-level BPE vocabularies, keyed by `tokenizer.ggml.pre`.
//!
//! Each is a list of regexes applied in order, every one splitting the pieces the previous
//! left (matches and the text between them both become pieces), as llama.cpp does. The
//! patterns are those of the models' `tokenizer.json` files, with `(?i:'s|...)` spelled out
//! case by case as llama.cpp does (so that e.g. `'ſ` is not taken for `'s`).

/// GPT-2's pattern.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

const CONTRACTIONS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";

/// What a `tokenizer.ggml.pre` name means.
pub(crate) struct PreConfig {
    pub regexes: Vec<String>,
    /// llama.cpp `clean_spaces` for this pre-tokenizer.
    pub clean_spaces: bool,
    /// A pre-token that is itself in the vocabulary is emitted without running merges.
    pub ignore_merges: bool,
    /// Default for `add_bos` when `tokenizer.ggml.add_bos_token` is absent.
    pub add_bos: bool,
}

/// The configuration for `name`, or `None` when it is not supported.
pub(crate) fn lookup(name: &str) -> Option<PreConfig> {
    let llama3 = format!(
        r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    let qwen2 = format!(
        r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    let qwen35 = format!(
        r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?[\p{{L}}\p{{M}}]+|\p{{N}}| ?[^\s\p{{L}}\p{{M}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    let cfg = |regexes: Vec<String>, clean_spaces: bool| PreConfig {
        regexes,
        clean_spaces,
        ignore_merges: false,
        add_bos: false,
    };
    let s = |x: &str| x.to_string();
    Some(match name {
        "default" => cfg(
            vec![
                s(r"[\p{P}\$\+<=>\^~\|]+"),
                s(GPT2),
                s(r"\p{N}+"),
                s(r"[0-9][0-9][0-9]"),
            ],
            true,
        ),
        "gpt2" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
        | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "mpt" | "olmo"
        | "jais" | "roberta-bpe" | "jina-v1-en" | "jina-v2-code" => cfg(vec![s(GPT2)], true),
        "trillion" | "granite-docling" => cfg(vec![s(GPT2)], false),
        "smollm" | "command-r" => cfg(vec![s(r"\p{N}"), s(GPT2)], false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            cfg(vec![s(r"\p{N}"), s(GPT2)], true)
        }
        "falcon" => cfg(
            vec![s(r"[\p{P}\$\+<=>\^~\|`]+"), s(GPT2), s(r"[0-9][0-9][0-9]")],
            true,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreConfig {
            regexes: vec![llama3],
            clean_spaces: true,
            ignore_merges: true,
            add_bos: true,
        },
        "dbrx" | "smaug-bpe" => cfg(vec![llama3], true),
        "chatglm-bpe" | "glm4" => cfg(vec![llama3], true),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
            cfg(vec![qwen2], false)
        }
        "megrez" | "stablelm2" => cfg(vec![qwen2], true),
        "qwen35" => cfg(vec![qwen35], false),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" => cfg(
            vec![
                s(r"\p{N}{1,3}"),
                s("[一-龥\u{3040}-ゟ゠-ヿ]+"),
                s(
                    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
                ),
            ],
            false,
        ),
        "tekken" => PreConfig {
            regexes: vec![s(
                r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            )],
            clean_spaces: false,
            ignore_merges: true,
            add_bos: true,
        },
        "gpt-4o" | "llama4" | "kanana2" | "minimax-m2" => cfg(
            vec![format!(
                r"[^\r\n\p{{L}}\p{{N}}]?[\p{{Lu}}\p{{Lt}}\p{{Lm}}\p{{Lo}}\p{{M}}]*[\p{{Ll}}\p{{Lm}}\p{{Lo}}\p{{M}}]+{CONTRACTIONS}?|[^\r\n\p{{L}}\p{{N}}]?[\p{{Lu}}\p{{Lt}}\p{{Lm}}\p{{Lo}}\p{{M}}]+[\p{{Ll}}\p{{Lm}}\p{{Lo}}\p{{M}}]*{CONTRACTIONS}?|\p{{N}}{{1,3}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            )],
            false,
        ),
        "poro-chat" | "bloom" | "gpt3-finnish" => {
            let mut c = cfg(vec![s(r" ?[^(\s|.,!?…。，、।۔،)]+")], false);
            if name == "gpt3-finnish" {
                c.regexes.push(s(r"\p{N}"));
            }
            c.clean_spaces = name != "poro-chat";
            c
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_patterns_compile() {
        for name in [
            "default",
            "gpt2",
            "smollm",
            "falcon",
            "llama-bpe",
            "dbrx",
            "qwen2",
            "qwen35",
            "deepseek-v3",
            "tekken",
            "gpt-4o",
            "bloom",
            "gpt3-finnish",
        ] {
            let cfg = lookup(name).unwrap();
            for re in &cfg.regexes {
                use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
                use tokenizers::SplitDelimiterBehavior;
                Split::new(
                    SplitPattern::Regex(re.clone()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{name}: {re}: {e}"));
            }
        }
        assert!(lookup("nope").is_none());
    }
}
