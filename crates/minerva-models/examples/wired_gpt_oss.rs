//! Writes a one-layer gpt-oss checkpoint whose weights are set by hand so that, after any
//! harmony prompt, greedy decoding answers with a fixed reply in two channels:
//!
//! `<|channel|>analysis<|message|>Think<|end|><|start|>assistant<|channel|>final<|message|>Paris<|return|>`
//!
//! It runs through the real engine (embedding, attention with sinks and YaRN, MoE, norms,
//! lm_head) and tokenizer (o200k_harmony, as OpenAI's original layout has no tokenizer.json),
//! so end-to-end tests can check how replies are split into reasoning and answer.
//!
//! How: hidden state dims 0..9 one-hot the current token, dim 9 is a flag, dim 10 a constant.
//! The attention head fires only on the token `Think` (query and key live in the
//! lowest-frequency rotary pair, so position barely matters) and copies it into the flag:
//! the flag says "the analysis is written". lm_head maps (current token, flag) to the next
//! token; the flag tells the two `<|channel|>` and the two `<|message|>` apart.
//!
//! Usage: `cargo run --release -p minerva-models --example wired_gpt_oss -- OUT_DIR`

use std::collections::HashMap;
use std::path::Path;

use minerva_models::harmony::Harmony;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const HIDDEN: usize = 16;
const HEAD_DIM: usize = 64;
const VOCAB: usize = 201_088;
const EXPERTS: usize = 2;
const INTERMEDIATE: usize = 16;
const FLAG: usize = 9;
const BIAS: usize = 10;
/// Rotary pairs are (i, i + 32); pair 31 turns slowest (about 3e-7 rad per token here).
const SLOW: usize = 31;

/// Tokens with a state slot, in slot order.
const SLOTS: [&str; 9] = [
    "assistant",
    "<|channel|>",
    "analysis",
    "<|message|>",
    "Think",
    "<|end|>",
    "<|start|>",
    "final",
    "Paris",
];

struct Tensors(Vec<(String, Vec<usize>, Vec<f32>)>);

impl Tensors {
    fn add(&mut self, name: &str, shape: &[usize]) -> &mut Vec<f32> {
        let n = shape.iter().product();
        self.0
            .push((name.to_string(), shape.to_vec(), vec![0.0; n]));
        &mut self.0.last_mut().expect("just pushed").2
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: wired_gpt_oss OUT_DIR")?;
    let out = Path::new(&out);
    let harmony = Harmony::load()?;
    let mut id = HashMap::new();
    for text in SLOTS.iter().chain(&["<|return|>"]) {
        match harmony.encode_with_specials(text).as_slice() {
            [one] => id.insert(*text, *one as usize),
            more => return Err(format!("'{text}' is {} tokens, not one", more.len()).into()),
        };
    }
    let slot = |t: &str| SLOTS.iter().position(|s| *s == t).expect("a slot token");

    let mut w = Tensors(Vec::new());
    let embed = w.add("model.embed_tokens.weight", &[VOCAB, HIDDEN]);
    for row in embed.chunks_mut(HIDDEN) {
        row[BIAS] = 1.0;
    }
    for t in SLOTS {
        embed[id[t] * HIDDEN + slot(t)] = 1.0;
    }

    let p = "model.layers.0";
    for norm in ["input_layernorm", "post_attention_layernorm"] {
        w.add(&format!("{p}.{norm}.weight"), &[HIDDEN]).fill(1.0);
    }
    w.add("model.norm.weight", &[HIDDEN]).fill(1.0);
    // A normed one-hot-plus-constant state has entries sqrt(8) ~ 2.83.
    let normed = 8f32.sqrt();
    w.add(&format!("{p}.self_attn.q_proj.weight"), &[HEAD_DIM, HIDDEN]);
    w.add(&format!("{p}.self_attn.q_proj.bias"), &[HEAD_DIM])[SLOW] = 8.0;
    w.add(&format!("{p}.self_attn.k_proj.weight"), &[HEAD_DIM, HIDDEN])
        [SLOW * HIDDEN + slot("Think")] = 8.0;
    w.add(&format!("{p}.self_attn.k_proj.bias"), &[HEAD_DIM]);
    w.add(&format!("{p}.self_attn.v_proj.weight"), &[HEAD_DIM, HIDDEN])[slot("Think")] =
        1.0 / normed;
    w.add(&format!("{p}.self_attn.v_proj.bias"), &[HEAD_DIM]);
    w.add(&format!("{p}.self_attn.o_proj.weight"), &[HIDDEN, HEAD_DIM])[FLAG * HEAD_DIM] = 1.0;
    w.add(&format!("{p}.self_attn.o_proj.bias"), &[HIDDEN]);
    w.add(&format!("{p}.self_attn.sinks"), &[1]);
    // Experts and router all zero: the MoE adds nothing.
    w.add(&format!("{p}.mlp.router.weight"), &[EXPERTS, HIDDEN]);
    w.add(&format!("{p}.mlp.router.bias"), &[EXPERTS]);
    let e = format!("{p}.mlp.experts");
    w.add(
        &format!("{e}.gate_up_proj"),
        &[EXPERTS, HIDDEN, 2 * INTERMEDIATE],
    );
    w.add(
        &format!("{e}.gate_up_proj_bias"),
        &[EXPERTS, 2 * INTERMEDIATE],
    );
    w.add(&format!("{e}.down_proj"), &[EXPERTS, INTERMEDIATE, HIDDEN]);
    w.add(&format!("{e}.down_proj_bias"), &[EXPERTS, HIDDEN]);

    let head = w.add("lm_head.weight", &[VOCAB, HIDDEN]);
    let (a, b) = (8.0, 4.0);
    let mut set = |next: &str, dim: usize, value: f32| head[id[next] * HIDDEN + dim] += value;
    for (cur, next) in [
        ("assistant", "<|channel|>"),
        ("analysis", "<|message|>"),
        ("final", "<|message|>"),
        ("Think", "<|end|>"),
        ("<|end|>", "<|start|>"),
        ("<|start|>", "assistant"),
        ("Paris", "<|return|>"),
    ] {
        set(next, slot(cur), a);
    }
    // Before the analysis is written (flag 0) / after (flag 1).
    for (cur, before, after) in [
        ("<|channel|>", "analysis", "final"),
        ("<|message|>", "Think", "Paris"),
    ] {
        set(before, slot(cur), a);
        set(before, FLAG, -b);
        set(after, slot(cur), a);
        set(after, FLAG, b);
        set(after, BIAS, -b);
    }

    std::fs::create_dir_all(out)?;
    let bytes: Vec<(&str, &[usize], Vec<u8>)> =
        w.0.iter()
            .map(|(n, s, v)| {
                let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (n.as_str(), s.as_slice(), b)
            })
            .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| Ok((*n, TensorView::new(Dtype::F32, s.to_vec(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors"))?;
    std::fs::write(out.join("config.json"), config().to_string())?;
    Ok(())
}

fn config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "attention_bias": true,
        "head_dim": HEAD_DIM,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": 1,
        "layer_types": ["full_attention"],
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "num_local_experts": EXPERTS,
        "num_experts_per_tok": EXPERTS,
        "experts_per_token": EXPERTS,
        "max_position_embeddings": 131072,
        "initial_context_length": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 150000,
        "rope_scaling": {
            "rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
            "original_max_position_embeddings": 4096, "truncate": false
        },
        "sliding_window": 128,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": false,
        "vocab_size": VOCAB,
        "eos_token_id": 200002,
        "pad_token_id": 199999
    })
}
