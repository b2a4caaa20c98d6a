//! Continuous batching on the default model (SmolLM2-135M-Instruct, CPU): a generation's
//! greedy tokens are the same whether it runs alone, beside 15 others joining at different
//! steps, or beside others in a KV pool so small that generations are preempted and
//! recomputed; the same as a `Session` produces; cancelled generations free their pages;
//! generations that share a long prefix compute it once and still produce the same tokens.

use std::collections::HashMap;

use minerva_engine::{Batch, BatchConfig, Engine, GenId, GenerateOptions, KvConfig, Step};
use minerva_models::messages::{ChatMessage, ChatOptions};

fn engine() -> Engine {
    let path = minerva_models::model_cache::default_model_path();
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-default-model",
        path.display()
    );
    Engine::load(&path).unwrap()
}

const QUESTIONS: [&str; 16] = [
    "Which city is the capital of France? Answer in one word.",
    "Write a short poem about the sea.",
    "What is 17 + 25?",
    "Who wrote the play Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Name three primary colors.",
    "Translate 'good morning' into Spanish.",
    "What does a bee make?",
    "How many legs does a spider have?",
    "Give me a synonym for happy.",
    "What is the largest planet in the solar system?",
    "Say hello in German.",
    "What color is the sky on a clear day?",
    "Which animal is known as the king of the jungle?",
    "What is the opposite of cold?",
    "Spell the word 'cat' backwards.",
];

fn prompts(engine: &Engine) -> Vec<Vec<u32>> {
    QUESTIONS
        .iter()
        .map(|q| {
            engine
                .encode_chat(&[ChatMessage::new("user", *q)], &ChatOptions::default())
                .unwrap()
        })
        .collect()
}

fn options(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    }
}

/// Runs `prompts` through one batch, each joining at its step in `joins`; returns each
/// generation's token ids.
fn run_batch(
    engine: &Engine,
    config: BatchConfig,
    prompts: &[Vec<u32>],
    joins: &[usize],
    max_tokens: usize,
) -> Vec<Vec<u32>> {
    let mut batch = Batch::new(engine.model(), engine.tokenizer(), config).unwrap();
    let mut ids: HashMap<GenId, usize> = HashMap::new();
    let mut out = vec![Vec::new(); prompts.len()];
    let mut finished = 0;
    let mut step = 0;
    while finished < prompts.len() {
        for (i, _) in joins.iter().enumerate().filter(|(_, &j)| j == step) {
            ids.insert(batch.add(&prompts[i], &options(max_tokens)).unwrap(), i);
        }
        for (id, event) in batch.step().unwrap() {
            match event {
                Step::Token(t) => out[ids[&id]].push(t.id),
                Step::Finished { .. } => finished += 1,
                Step::Prefill { .. } => {}
            }
        }
        step += 1;
        assert!(step < 10_000, "the batch never finished");
    }
    assert!(batch.is_empty());
    out
}

#[test]
fn generations_are_the_same_alone_batched_and_preempted() {
    let engine = engine();
    let prompts = prompts(&engine);
    let max_tokens = 24;
    // Alone, each through a Session (the single-conversation path).
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut session = engine.session(None).unwrap();
            session
                .generate(p, &options(max_tokens), |_| {
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            session.tokens()[p.len()..].to_vec()
        })
        .collect();
    // Together, joining at different steps, with a step budget that makes prompts wait.
    let joins: Vec<usize> = (0..prompts.len()).map(|i| (i % 4) * 3).collect();
    let config = BatchConfig {
        max_batch: 16,
        max_step_tokens: 64,
        kv: KvConfig {
            max_pass_tokens: 64,
            ..KvConfig::default()
        },
        ..BatchConfig::default()
    };
    let together = run_batch(&engine, config, &prompts, &joins, max_tokens);
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "generation {i} alone vs batched");
    }
    // A pool of 14 pages of 16 positions for 16 generations of ~60 tokens: generations are
    // preempted, recomputed, and still produce the same tokens.
    let tight = BatchConfig {
        max_context: Some(200),
        kv_pages: Some(14),
        ..config
    };
    let preempted = run_batch(
        &engine,
        tight,
        &prompts,
        &vec![0; prompts.len()],
        max_tokens,
    );
    for (i, (a, b)) in alone.iter().zip(&preempted).enumerate() {
        assert_eq!(a, b, "generation {i} alone vs preempted");
    }
}

#[test]
fn cancelling_frees_pages_and_others_go_on() {
    let engine = engine();
    let prompts = prompts(&engine);
    let mut batch = Batch::new(engine.model(), engine.tokenizer(), BatchConfig::default()).unwrap();
    let a = batch.add(&prompts[0], &options(8)).unwrap();
    let b = batch.add(&prompts[1], &options(8)).unwrap();
    batch.step().unwrap();
    let (tokens, _) = batch.kv_usage();
    assert!(tokens >= prompts[0].len() + prompts[1].len());
    let stats = batch.cancel(a).expect("a was running");
    assert_eq!(stats.finish, minerva_engine::FinishReason::Cancelled);
    assert_eq!(batch.kv_usage().0, tokens - prompts[0].len());
    assert!(batch.cancel(a).is_none());
    let mut finished = false;
    for _ in 0..20 {
        for (id, event) in batch.step().unwrap() {
            assert_eq!(id, b);
            finished |= matches!(event, Step::Finished { .. });
        }
    }
    assert!(finished && batch.is_empty());
    assert_eq!(batch.kv_usage(), (0, 0));
    assert!(batch.kv_pool_bytes() > 0);
}

/// Conversations with one long system prompt: later ones take its pages from the prefix
/// cache (their statistics say so) and generate exactly what they generate without it.
#[test]
fn a_shared_prefix_is_computed_once_and_changes_nothing() {
    let engine = engine();
    let system = "You are a careful assistant. ".repeat(24);
    let prompts: Vec<Vec<u32>> = QUESTIONS[..4]
        .iter()
        .map(|q| {
            let messages = [
                ChatMessage::new("system", &system),
                ChatMessage::new("user", *q),
            ];
            engine
                .encode_chat(&messages, &ChatOptions::default())
                .unwrap()
        })
        .collect();
    let shared = prompts[0]
        .iter()
        .zip(&prompts[1])
        .take_while(|(a, b)| a == b)
        .count();
    assert!(shared > 150, "the prompts share {shared} tokens");
    let run = |prefix_cache: bool| {
        let config = BatchConfig {
            prefix_cache,
            ..BatchConfig::default()
        };
        let mut batch = Batch::new(engine.model(), engine.tokenizer(), config).unwrap();
        let mut out = Vec::new();
        // One after another, so each finds the pages of those before.
        for p in &prompts {
            batch.add(p, &options(12)).unwrap();
            let (mut tokens, mut reused) = (Vec::new(), None);
            while !batch.is_empty() {
                for (_, event) in batch.step().unwrap() {
                    match event {
                        Step::Token(t) => tokens.push(t.id),
                        Step::Finished { stats, .. } => reused = Some(stats.reused_tokens),
                        Step::Prefill { .. } => {}
                    }
                }
            }
            out.push((tokens, reused.expect("finished")));
        }
        out
    };
    let (with, without) = (run(true), run(false));
    for (i, ((a, reused), (b, none))) in with.iter().zip(&without).enumerate() {
        assert_eq!(a, b, "conversation {i} with and without the prefix cache");
        assert_eq!(*none, 0);
        if i > 0 {
            assert!(
                *reused >= shared / 16 * 16 - 16,
                "conversation {i} reused {reused} of {shared}"
            );
        }
    }
}
