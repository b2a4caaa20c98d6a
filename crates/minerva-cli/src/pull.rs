//! `minerva pull ORG/NAME[@REVISION][/FILE]`: a model from the Hugging Face hub into its
//! cache, with a bar per file and one for the whole pull.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use minerva_hub::{Hub, PlannedFile, PullProgress};
use minerva_models::local_models::Caches;

use crate::ls::human_size;

#[derive(clap::Args)]
pub struct PullArgs {
    /// ORG/NAME: the repository's model (its main branch, or the branch, tag or commit
    /// after @); ORG/NAME/FILE: one file or folder of it (one GGUF of several)
    pub spec: String,
}

/// Bars on stderr, drawn only where it is a terminal.
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    /// Each file's bar and the bytes it had at its last update.
    files: HashMap<String, (ProgressBar, u64)>,
    sizes: HashMap<String, u64>,
}

impl Bars {
    fn new() -> Bars {
        let target = match std::io::stderr().is_terminal() {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(style(
            "{prefix:>30} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ));
        total.set_prefix("total");
        Bars {
            multi,
            total,
            files: HashMap::new(),
            sizes: HashMap::new(),
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The last `width` characters of `path`, for the bars' labels.
fn label(path: &str, width: usize) -> String {
    let chars: Vec<char> = path.chars().collect();
    match chars.len() > width {
        true => format!(
            "…{}",
            chars[chars.len() - (width - 1)..]
                .iter()
                .collect::<String>()
        ),
        false => path.to_string(),
    }
}

impl PullProgress for Bars {
    fn planned(&mut self, files: &[PlannedFile]) {
        self.total.set_length(files.iter().map(|f| f.size).sum());
        self.total
            .set_position(files.iter().filter(|f| f.cached).map(|f| f.size).sum());
        self.sizes = files.iter().map(|f| (f.path.clone(), f.size)).collect();
    }

    fn advanced(&mut self, path: &str, done: u64) {
        let size = self.sizes.get(path).copied().unwrap_or(0);
        let (bar, last) = self.files.entry(path.to_string()).or_insert_with(|| {
            let bar = self
                .multi
                .insert_before(&self.total, ProgressBar::new(size));
            bar.set_style(style(
                "{prefix:>30} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
            ));
            bar.set_prefix(label(path, 30));
            (bar, 0)
        });
        bar.set_position(done);
        self.total.inc(done.saturating_sub(*last));
        *last = done;
    }

    fn finished(&mut self, path: &str) {
        if let Some((bar, _)) = self.files.get(path) {
            bar.finish();
        }
    }
}

pub fn pull(args: &PullArgs) -> anyhow::Result<()> {
    let hub = Hub::from_env()?;
    let cache = Caches::from_env().hub;
    let mut bars = Bars::new();
    let pulled = minerva_hub::pull(&hub, &cache, &args.spec, &mut bars)?;
    bars.total.finish();
    println!(
        "pulled {} at {} ({} files, {}) into {}",
        pulled.repo_id,
        &pulled.commit[..12],
        pulled.files,
        human_size(pulled.bytes),
        pulled.snapshot.display()
    );
    println!("chat with it: minerva chat --model {}", args.spec);
    Ok(())
}
