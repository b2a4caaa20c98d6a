//! Chat templates: the Jinja templates models ship (GGUF `tokenizer.chat_template`,
//! `tokenizer_config.json`'s `chat_template`), rendered with minijinja the way Hugging Face
//! `apply_chat_template` renders them: `trim_blocks` and `lstrip_blocks` on, Python string
//! methods (`.strip()`, `.startswith()`, ...), `raise_exception`, `strftime_now`, and a
//! `tojson` that writes JSON as Python's `json.dumps(..., ensure_ascii=False)` does.

use std::collections::BTreeMap;

use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object};
use minijinja::{Environment, Error, ErrorKind, Value};

pub use crate::messages::ChatMessage;
use crate::messages::ChatOptions;

/// Errors compiling or rendering a chat template (one-line messages).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template: {0}")]
    Syntax(String),
    #[error("chat template: {0}")]
    Render(String),
    /// The template called `raise_exception(message)`.
    #[error("chat template raised an exception: {0}")]
    Raised(String),
}

const TEMPLATE_NAME: &str = "chat_template";
/// Marks errors coming from `raise_exception` so they can be told apart.
const RAISE_MARKER: &str = "\u{1}raise_exception\u{1}";

/// ChatML, for models that ship no template.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos: Option<String>,
    eos: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`. `bos`/`eos` are the texts of the model's BOS/EOS tokens, visible to
    /// the template as `bos_token`/`eos_token` (undefined when `None`).
    pub fn new(
        source: &str,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.trim_blocks(true).lstrip_blocks(true);
        env.set_syntax(
            syntax
                .build()
                .map_err(|e| TemplateError::Syntax(describe(&e)))?,
        );
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos,
            eos,
        })
    }

    /// The ChatML template (`<|im_start|>role\ncontent<|im_end|>\n`), for models without one.
    pub fn chatml() -> Self {
        ChatTemplate::new(CHATML, None, None).expect("the ChatML template compiles")
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt`, ends with the opening of an assistant
    /// turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with(messages, &ChatOptions::default(), add_generation_prompt)
    }

    /// [`render`](Self::render) with the request's tools (as Hugging Face passes them:
    /// `[{"type": "function", "function": {...}}]`) and reasoning effort.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| Value::from_object(MessageValue(m.clone())))
            .collect();
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert("messages".into(), Value::from(messages));
        // Hugging Face passes these as None when no tools/documents are given.
        let tools = match options.tools.as_slice() {
            [] => Value::from(()),
            tools => Value::from(minijinja::value::Serde(
                tools
                    .iter()
                    .map(|t| serde_json::json!({"type": "function", "function": t}))
                    .collect::<Vec<_>>(),
            )),
        };
        ctx.insert("tools".into(), tools);
        let effort = format!("{:?}", options.effort).to_lowercase();
        ctx.insert("reasoning_effort".into(), Value::from(effort));
        ctx.insert("documents".into(), Value::from(()));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        if let Some(b) = &self.bos {
            ctx.insert("bos_token".into(), Value::from(b.as_str()));
        }
        if let Some(e) = &self.eos {
            ctx.insert("eos_token".into(), Value::from(e.as_str()));
        }
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        tmpl.render(Value::from(ctx)).map_err(|e| {
            // The raise_exception message may sit on a chained error.
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = cur {
                let text = err.to_string();
                if let Some(i) = text.find(RAISE_MARKER) {
                    let rest = &text[i + RAISE_MARKER.len()..];
                    let msg = rest.split(RAISE_MARKER).next().unwrap_or(rest);
                    return TemplateError::Raised(one_line(msg));
                }
                cur = err.source();
            }
            TemplateError::Render(describe(&e))
        })
    }
}

/// A message as the template sees it: a map with keys `role` and `content`, in that order
/// (as Python dicts keep them, which `tojson` shows).
#[derive(Debug)]
struct MessageValue(ChatMessage);

impl Object for MessageValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(Value::from(self.0.role.as_str())),
            "content" => Some(Value::from(self.0.content.as_str())),
            "tool_calls" if !self.0.tool_calls.is_empty() => {
                Some(Value::from(minijinja::value::Serde(&self.0.tool_calls)))
            }
            "name" => self.0.name.as_deref().map(Value::from),
            "tool_call_id" => self.0.tool_call_id.as_deref().map(Value::from),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let m = &self.0;
        let mut keys = vec!["role", "content"];
        keys.extend((!m.tool_calls.is_empty()).then_some("tool_calls"));
        keys.extend(m.name.is_some().then_some("name"));
        keys.extend(m.tool_call_id.is_some().then_some("tool_call_id"));
        Enumerator::Values(keys.into_iter().map(Value::from).collect())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    one_line(&s)
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISE_MARKER}{message}{RAISE_MARKER}"),
    ))
}

/// `strftime_now(format)`: the current UTC time, with the common `strftime` directives.
fn strftime_now(format: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Value::from(strftime(&format, secs)))
}

pub(crate) fn strftime(format: &str, unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix.div_euclid(86_400);
    let tod = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (h, m, s) = (tod / 3600, tod / 60 % 60, tod % 60);

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&day.to_string()),
                Some('m') => out.push_str(&month.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{m:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('j') => out.push_str(&format!("{:03}", doy_of(year, month, day))),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

fn doy_of(year: i64, month: i64, day: i64) -> i64 {
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    CUM[(month - 1) as usize] + day + i64::from(leap && month > 2)
}

/// `tojson(indent=None, sort_keys=False, separators=None)` as Python's
/// `json.dumps(value, ensure_ascii=False, ...)`.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => Some(" ".repeat(v.as_usize().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                )
            })?)),
        },
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().unwrap_or_default().to_string())
                .collect();
            match parts.as_slice() {
                [a, b] => (a.clone(), b.clone()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let mut out = String::new();
    let fmt = JsonFmt {
        indent: indent.as_deref(),
        item_sep: &item_sep,
        key_sep: &key_sep,
        sort_keys,
    };
    fmt.write(&mut out, value, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonFmt<'a> {
    indent: Option<&'a str>,
    item_sep: &'a str,
    key_sep: &'a str,
    sort_keys: bool,
}

impl JsonFmt<'_> {
    fn newline(&self, out: &mut String, depth: usize) {
        if let Some(ind) = self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    }

    fn write(&self, out: &mut String, v: &Value, depth: usize) -> Result<(), Error> {
        use minijinja::value::ValueKind;
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if v.is_integer() {
                    out.push_str(&v.to_string());
                } else {
                    let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                    if f.is_nan() {
                        out.push_str("NaN");
                    } else if f.is_infinite() {
                        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                    } else {
                        let s = format!("{f:?}");
                        out.push_str(&s);
                    }
                }
            }
            ValueKind::Bytes => write_json_string(
                out,
                &String::from_utf8_lossy(v.as_bytes().unwrap_or_default()),
            ),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep);
                    }
                    self.newline(out, depth + 1);
                    self.write(out, item, depth + 1)?;
                }
                self.newline(out, depth);
                out.push(']');
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort_by_key(|a| a.to_string());
                }
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep);
                    }
                    self.newline(out, depth + 1);
                    let key = match k.as_str() {
                        Some(s) => s.to_string(),
                        None if k.is_none() => "null".to_string(),
                        None => {
                            let mut s = String::new();
                            self.write(&mut s, k, 0)?;
                            s
                        }
                    };
                    write_json_string(out, &key);
                    out.push_str(self.key_sep);
                    let item = v.get_item(k)?;
                    self.write(out, &item, depth + 1)?;
                }
                self.newline(out, depth);
                out.push('}');
            }
            // Strings, and anything else as its string form.
            _ => match v.as_str() {
                Some(s) => write_json_string(out, s),
                None => write_json_string(out, &v.to_string()),
            },
        }
        Ok(())
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
        // 2024-02-29 12:34:56 UTC, a Thursday.
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %A %j", 1_709_210_096),
            "2024-02-29 12:34:56 Thursday 060"
        );
        assert_eq!(strftime("%-d %B %y %%", 1_709_210_096), "29 February 24 %");
    }

    #[test]
    fn tojson_like_python() {
        let t = ChatTemplate::new(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'a<b' | tojson }}",
            None,
            None,
        )
        .unwrap();
        let env = &t.env;
        let out = env
            .get_template(TEMPLATE_NAME)
            .unwrap()
            .render(minijinja::context! { x => minijinja::context! { a => 1, b => vec![true, false], c => "é\"\n", d => 1.5 } })
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": 1, \"b\": [true, false], \"c\": \"é\\\"\\n\", \"d\": 1.5}|{\n  \"a\": 1,\n  \"b\": [\n    true,\n    false\n  ],\n  \"c\": \"é\\\"\\n\",\n  \"d\": 1.5\n}|\"a<b\""
        );
    }
}
