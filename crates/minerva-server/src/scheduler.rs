//! The scheduler: one thread that owns the model's compute. Requests wait in a bounded FIFO
//! queue; up to `max_concurrent` generations run at once in one continuous batch
//! (`minerva_engine::Batch`): each step is one forward pass over all of them, and a request
//! joins at the step after it arrives. A generation whose receiver is gone (the client
//! disconnected) leaves the batch before the next step, and its KV pages are free at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use minerva_engine::{
    Batch, BatchConfig, Engine, GenId, GenerateOptions, GenerationStats, SampledToken, Step,
};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// What a generation reports, in order: tokens, then exactly one `Finished` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Token(SampledToken),
    Finished {
        text: String,
        stats: GenerationStats,
    },
    Failed(String),
}

pub type Events = mpsc::UnboundedReceiver<Event>;

/// One generation to run.
pub struct Job {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Generations advanced together.
    pub max_concurrent: usize,
    /// Generations waiting for a slot; more are refused.
    pub max_queue: usize,
    /// KV cache tokens per generation (None: the model's context length).
    pub max_context: Option<usize>,
    /// Pages of 16 positions in the KV pool's full-attention layers (None: grow on demand);
    /// when they run out, the newest generations are preempted and recomputed later.
    pub kv_pages: Option<usize>,
    /// Whether requests reuse the KV pages of earlier ones that began with the same tokens.
    pub prefix_cache: bool,
}

/// The queue was full: the request is refused (HTTP 429).
#[derive(Debug)]
pub struct QueueFull;

struct Queued {
    job: Job,
    events: mpsc::UnboundedSender<Event>,
    submitted: Instant,
}

struct Shared {
    queue: Mutex<VecDeque<Queued>>,
    wake: Condvar,
    /// Generations admitted and not yet ended (queued or active); the scheduler thread
    /// decrements it as each ends.
    in_flight: Mutex<usize>,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: AtomicBool,
}

/// Handle to the scheduler thread; dropping it stops the thread after the current pass.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    pub fn start(engine: Arc<Engine>, limits: Limits, metrics: Arc<Metrics>) -> Scheduler {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            in_flight: Mutex::new(0),
            limits,
            metrics,
            shutdown: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("minerva-scheduler".into())
            .spawn(move || run(&engine, &worker))
            .expect("spawning the scheduler thread");
        Scheduler {
            shared,
            thread: Some(thread),
        }
    }

    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Queues `jobs` together (all or none), returning one event receiver per job.
    pub fn submit(&self, jobs: Vec<Job>) -> Result<Vec<Events>, QueueFull> {
        let limits = self.shared.limits;
        {
            let mut in_flight = lock(&self.shared.in_flight);
            if *in_flight + jobs.len() > limits.max_concurrent + limits.max_queue {
                return Err(QueueFull);
            }
            *in_flight += jobs.len();
        }
        let submitted = Instant::now();
        let mut receivers = Vec::with_capacity(jobs.len());
        let mut queue = lock(&self.shared.queue);
        for job in jobs {
            let (events, rx) = mpsc::unbounded_channel();
            queue.push_back(Queued {
                job,
                events,
                submitted,
            });
            receivers.push(rx);
        }
        self.shared.metrics.queue_depth.set(queue.len() as i64);
        self.shared.wake.notify_one();
        Ok(receivers)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of plain counters and
    // queues, which stay structurally valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A generation in the batch: where its events go and its timing.
struct Active {
    events: mpsc::UnboundedSender<Event>,
    submitted: Instant,
    last_token: Option<Instant>,
}

fn run(engine: &Engine, shared: &Shared) {
    let config = BatchConfig {
        max_batch: shared.limits.max_concurrent,
        max_context: shared.limits.max_context,
        kv_pages: shared.limits.kv_pages,
        kv: engine.kv_config(),
        prefix_cache: shared.limits.prefix_cache,
        ..BatchConfig::default()
    };
    let mut batch = match Batch::new(engine.model(), engine.tokenizer(), config) {
        Ok(batch) => batch,
        Err(err) => return fail_everything(shared, &err.to_string()),
    };
    let mut active: HashMap<GenId, Active> = HashMap::new();
    while !shared.shutdown.load(Ordering::Acquire) {
        admit(shared, &mut batch, &mut active);
        if active.is_empty() {
            let queue = lock(&shared.queue);
            if queue.is_empty() && !shared.shutdown.load(Ordering::Acquire) {
                drop(shared.wake.wait(queue));
            }
            continue;
        }
        // Clients that left: out of the batch before the pass, their pages freed.
        let gone: Vec<GenId> = active
            .iter()
            .filter(|(_, g)| g.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in &gone {
            batch.cancel(*id);
            active.remove(id);
            shared.metrics.cancelled.inc();
        }
        let mut ended = gone.len();
        match batch.step() {
            Ok(events) => {
                for (id, step) in events {
                    let Some(gen) = active.get_mut(&id) else {
                        continue;
                    };
                    if !deliver(gen, step, &shared.metrics) {
                        batch.cancel(id);
                        active.remove(&id);
                        ended += 1;
                    }
                }
            }
            Err(err) => {
                // A pass failed for all of them: each gets the error, none is left half-done.
                for (id, gen) in active.drain() {
                    batch.cancel(id);
                    let _ = gen.events.send(Event::Failed(err.to_string()));
                    ended += 1;
                }
            }
        }
        end(shared, ended);
        publish_kv(&shared.metrics, &batch);
    }
}

/// Answers every queued request with `message` (the batch could not be made).
fn fail_everything(shared: &Shared, message: &str) {
    while !shared.shutdown.load(Ordering::Acquire) {
        let mut queue = lock(&shared.queue);
        let failed = queue.len();
        for q in queue.drain(..) {
            let _ = q.events.send(Event::Failed(message.to_string()));
        }
        drop(queue);
        end(shared, failed);
        let queue = lock(&shared.queue);
        if queue.is_empty() && !shared.shutdown.load(Ordering::Acquire) {
            drop(shared.wake.wait(queue));
        }
    }
}

/// Moves queued jobs into the batch while it has room (dropping those whose client already
/// left).
fn admit(shared: &Shared, batch: &mut Batch<'_>, active: &mut HashMap<GenId, Active>) {
    let mut queue = lock(&shared.queue);
    let before = queue.len();
    queue.retain(|q| !q.events.is_closed());
    let mut ended = before - queue.len();
    shared.metrics.cancelled.inc_by(ended as u64);
    while batch.has_room() {
        let Some(q) = queue.pop_front() else { break };
        match batch.add(&q.job.prompt, &q.job.options) {
            Ok(id) => {
                shared
                    .metrics
                    .prompt_tokens
                    .inc_by(q.job.prompt.len() as u64);
                active.insert(
                    id,
                    Active {
                        events: q.events,
                        submitted: q.submitted,
                        last_token: None,
                    },
                );
            }
            Err(err) => {
                let _ = q.events.send(Event::Failed(err.to_string()));
                ended += 1;
            }
        }
    }
    shared.metrics.queue_depth.set(queue.len() as i64);
    shared.metrics.active.set(active.len() as i64);
    drop(queue);
    end(shared, ended);
}

/// Sends what a step did for `gen`; false once it has ended (finished, failed or abandoned).
fn deliver(gen: &mut Active, step: Step, metrics: &Metrics) -> bool {
    match step {
        Step::Prefill { .. } => true,
        Step::Token(token) => {
            let now = Instant::now();
            match gen.last_token {
                None => metrics
                    .time_to_first_token
                    .observe((now - gen.submitted).as_secs_f64()),
                Some(last) => metrics
                    .inter_token_latency
                    .observe((now - last).as_secs_f64()),
            }
            gen.last_token = Some(now);
            metrics.generated_tokens.inc();
            let delivered = gen.events.send(Event::Token(token)).is_ok();
            if !delivered {
                metrics.cancelled.inc();
            }
            delivered
        }
        Step::Finished { text, stats } => {
            // The final token (end of text, or the one completing a stop string) produced
            // no `Token` step but was generated.
            if matches!(
                stats.finish,
                minerva_engine::FinishReason::EndOfText | minerva_engine::FinishReason::Stop
            ) {
                metrics.generated_tokens.inc();
            }
            let _ = gen.events.send(Event::Finished { text, stats });
            false
        }
    }
}

fn end(shared: &Shared, ended: usize) {
    if ended > 0 {
        let mut in_flight = lock(&shared.in_flight);
        *in_flight = in_flight.saturating_sub(ended);
    }
}

fn publish_kv(metrics: &Metrics, batch: &Batch<'_>) {
    let (tokens, bytes) = batch.kv_usage();
    metrics.active.set(batch.len() as i64);
    metrics.kv_tokens.set(tokens as i64);
    metrics.kv_bytes.set(bytes as i64);
}
