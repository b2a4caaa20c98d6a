//! A Rust client of `minerva serve`: one plain chat completion, then the same question
//! streamed token by token over server-sent events.
//!
//!     minerva serve &                      # http://127.0.0.1:8080
//!     cargo run -p minerva-server --example client -- [http://127.0.0.1:8080] [API_KEY]

use std::io::{BufRead, BufReader, Write};

use serde_json::{json, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let key = args.next().unwrap_or_default();
    let http = reqwest::blocking::Client::builder().timeout(None).build()?;

    // The server serves one model; ask for its name.
    let models: Value = http
        .get(format!("{base}/v1/models"))
        .bearer_auth(&key)
        .send()?
        .error_for_status()?
        .json()?;
    let model = models["data"][0]["id"]
        .as_str()
        .ok_or("no model listed")?
        .to_string();

    let request = |stream: bool| {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 64,
            "stream": stream,
        })
    };

    let answer: Value = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&request(false))
        .send()?
        .error_for_status()?
        .json()?;
    println!("{}", answer["choices"][0]["message"]["content"]);
    println!("usage: {}", answer["usage"]);

    // Streaming: each `data:` line is a chunk; the stream ends with `data: [DONE]`.
    let response = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&request(true))
        .send()?
        .error_for_status()?;
    for line in BufReader::new(response).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data)?;
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            print!("{text}");
            std::io::stdout().flush()?;
        }
    }
    println!();
    Ok(())
}
