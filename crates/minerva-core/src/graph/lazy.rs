//! Lazy arrays: inside [`lazily`], elementwise ops, row reductions and products on f32
//! arrays ([`crate::ops`]) record nodes into this thread's graph and return arrays whose
//! values are not computed yet. The first read of any of them (attention, RoPE, a reshape,
//! a copy to the host) compiles the graph, with the values still referenced as its outputs
//! (those dropped unread are never computed), and runs it: a norm after a residual add, or
//! a gated activation, becomes one pass however the model wrote it, and the products of
//! one input (q, k and v) one kernel. Plans are cached by the graph's structure and
//! shapes, so each step of a decode loop compiles nothing.
//!
//! Outside [`lazily`] (or with [`set_enabled`]`(false)`), each op is compiled and run on
//! its own as it is called: the eager path, one pass per op.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{compile, run, Graph, Node, NodeId, Op, Plan};
use crate::{Array, DType, Device, Error, Result};

/// A value recorded and not yet computed: its node in a generation of its recording's
/// graph, and once computed, its array (or why it could not be).
pub(crate) struct Pending {
    recording: Arc<Mutex<Recording>>,
    node: NodeId,
    generation: u64,
    device: Device,
    value: OnceLock<std::result::Result<Array, String>>,
}

impl Pending {
    pub(crate) fn device(&self) -> Device {
        self.device
    }

    /// The computed value; computes every value its recording still owes first if needed,
    /// or waits for the evaluation that took it (on another thread) to finish.
    pub(crate) fn value(&self) -> Result<&Array> {
        if self.value.get().is_none() {
            evaluate(&self.recording)?;
        }
        self.value
            .wait()
            .as_ref()
            .map_err(|why| Error::Device(format!("a recorded value failed: {why}")))
    }

    /// Whether it still stands for a node of `r`'s graph (recorded there, not taken by an
    /// evaluation yet).
    fn recorded_in(&self, r: &Recording, this: &Arc<Mutex<Recording>>) -> bool {
        Arc::ptr_eq(&self.recording, this)
            && self.generation == r.generation
            && self.value.get().is_none()
    }
}

/// A graph being recorded on one device, and the arrays behind its inputs.
struct Recording {
    device: Device,
    graph: Graph,
    /// Input `k`'s array and node.
    inputs: Vec<(Array, NodeId)>,
    /// Values handed out and not computed yet.
    pending: Vec<(NodeId, Weak<Pending>)>,
    /// Evaluations that took the graph so far: a pending value of an earlier generation is
    /// being (or was) computed, not a node of `graph`.
    generation: u64,
}

impl Recording {
    fn new(device: Device) -> Arc<Mutex<Recording>> {
        Arc::new(Mutex::new(Recording {
            device,
            graph: Graph::new(),
            inputs: Vec::new(),
            pending: Vec::new(),
            generation: 0,
        }))
    }

    /// The node that stands for `a` in this recording: its own node while it is a value
    /// recorded here and not taken by an evaluation, else an input (one per distinct
    /// array); `None` for a value still to compute elsewhere (read it without the lock).
    fn node_of(&mut self, this: &Arc<Mutex<Recording>>, a: &Array) -> Option<NodeId> {
        let a = match a.pending() {
            Some(p) if p.recorded_in(self, this) => return Some(p.node),
            Some(p) => p.value.get()?.as_ref().ok()?,
            None => a,
        };
        if let Some((_, id)) = self.inputs.iter().find(|(b, _)| b.same_view(a)) {
            return Some(*id);
        }
        let id = self.graph.input(a.shape());
        self.inputs.push((a.clone(), id));
        Some(id)
    }
}

static ENABLED: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// This thread's recording inside [`lazily`], and how deep the scopes nest.
    static CURRENT: RefCell<Option<Arc<Mutex<Recording>>>> = const { RefCell::new(None) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Plans evaluated on this thread inside [`traced`].
    static TRACE: RefCell<Option<Vec<Arc<Plan>>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, with its result, the plans evaluated on this thread while it ran
/// (one per evaluation, in order): what a pass of a model fused, for `--dump-graph`.
pub fn traced<T>(f: impl FnOnce() -> T) -> (T, Vec<Arc<Plan>>) {
    let outer = TRACE.with(|t| t.borrow_mut().replace(Vec::new()));
    let out = f();
    let plans = TRACE.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    (out, plans.unwrap_or_default())
}

/// Turns lazy recording on or off for the whole process (on by default); off, [`lazily`]
/// just calls its function and every op runs as it is called.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Runs `f` with ops recorded lazily on this thread (when enabled). Arrays it returns may
/// still be pending; they compute when read, from any thread.
pub fn lazily<T>(f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    /// Leaves the scope even when `f` unwinds.
    struct Scope;
    impl Drop for Scope {
        fn drop(&mut self) {
            let depth = DEPTH.with(|d| {
                d.set(d.get() - 1);
                d.get()
            });
            if depth == 0 {
                // Pending arrays keep the recording alive; later ops start a new one.
                CURRENT.with(|c| c.borrow_mut().take());
            }
        }
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    let _scope = Scope;
    f()
}

fn in_scope() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Records `build` over `inputs` (f32 arrays on one device) and returns arrays for the
/// nodes it returns: pending inside [`lazily`], computed at once outside.
pub(crate) fn record(
    name: &str,
    inputs: &[&Array],
    build: impl FnOnce(&mut Graph, &[NodeId]) -> Result<Vec<NodeId>>,
) -> Result<Vec<Array>> {
    record_weighted(name, inputs, &[], build)
}

/// [`record`] with `weights` too: arrays of any dtype that only products read (their nodes
/// follow the inputs' in what `build` gets).
pub(crate) fn record_weighted(
    name: &str,
    inputs: &[&Array],
    weights: &[&Array],
    build: impl FnOnce(&mut Graph, &[NodeId]) -> Result<Vec<NodeId>>,
) -> Result<Vec<Array>> {
    let device = inputs.first().map_or(Device::Cpu, |a| a.device());
    if let Some(w) = weights.iter().find(|w| w.device() != device) {
        return Err(Error::Device(format!(
            "{name}: inputs on {device} and {}",
            w.device()
        )));
    }
    for a in inputs {
        if a.dtype() != DType::F32 || a.quant().is_some() {
            return Err(Error::DType {
                expected: DType::F32,
                found: a.dtype(),
            });
        }
        if a.device() != device {
            return Err(Error::Device(format!(
                "{name}: inputs on {device} and {}",
                a.device()
            )));
        }
    }
    let lazy = in_scope();
    let recording = if lazy {
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            match &*c {
                Some(r) if r.lock().expect("recording").device == device => Arc::clone(r),
                _ => {
                    let r = Recording::new(device);
                    *c = Some(Arc::clone(&r));
                    r
                }
            }
        })
    } else {
        Recording::new(device)
    };
    let (mut r, ids) = loop {
        let mut r = recording.lock().expect("recording");
        let ids: Option<Vec<NodeId>> = inputs
            .iter()
            .chain(weights)
            .map(|a| r.node_of(&recording, a))
            .collect();
        match ids {
            Some(ids) => break (r, ids),
            None => {
                // A value computed elsewhere (another recording, or an evaluation in
                // flight): wait for it without this lock, then try again.
                drop(r);
                for a in inputs.iter().chain(weights) {
                    a.ready()?;
                }
            }
        }
    };
    // A failed build leaves only dead nodes behind.
    let outs = build(&mut r.graph, &ids)?;
    let outputs: Vec<Array> = outs
        .into_iter()
        .map(|id| {
            let pending = Arc::new(Pending {
                recording: Arc::clone(&recording),
                node: id,
                generation: r.generation,
                device,
                value: OnceLock::new(),
            });
            r.pending.push((id, Arc::downgrade(&pending)));
            Array::from_pending(pending, r.graph.shape(id))
        })
        .collect();
    drop(r);
    if lazy {
        return Ok(outputs);
    }
    evaluate(&recording)?;
    outputs.iter().map(|a| a.ready().cloned()).collect()
}

/// Computes every value of `recording` still referenced and not computed. The graph is
/// taken out under the lock and run without it: the threads a plan's products run on may
/// pick up other work that records meanwhile (into the graph's next generation).
fn evaluate(recording: &Arc<Mutex<Recording>>) -> Result<()> {
    let (graph, inputs, live) = {
        let mut r = recording.lock().expect("recording");
        let live: Vec<(NodeId, Arc<Pending>)> = r
            .pending
            .iter()
            .filter_map(|(id, w)| w.upgrade().map(|p| (*id, p)))
            .filter(|(_, p)| p.value.get().is_none())
            .collect();
        r.pending.clear();
        r.generation += 1;
        let graph = std::mem::take(&mut r.graph);
        let inputs: Vec<Array> = r.inputs.drain(..).map(|(a, _)| a).collect();
        (graph, inputs, live)
    };
    if live.is_empty() {
        return Ok(());
    }
    let outputs: Vec<NodeId> = live.iter().map(|(id, _)| *id).collect();
    let plan = cached_plan(&graph, &outputs);
    TRACE.with(|t| {
        if let Some(plans) = t.borrow_mut().as_mut() {
            plans.push(Arc::clone(&plan));
        }
    });
    let inputs: Vec<&Array> = inputs.iter().collect();
    match run(&plan, &inputs) {
        Ok(values) => {
            for ((_, p), v) in live.iter().zip(values) {
                // Only this evaluation sets values of this generation.
                let _ = p.value.set(Ok(v));
            }
            Ok(())
        }
        Err(e) => {
            // Whoever waits for these values learns why there are none.
            for (_, p) in &live {
                let _ = p.value.set(Err(e.to_string()));
            }
            Err(e)
        }
    }
}

/// A recorded graph and its outputs, as the plan cache knows them.
struct Entry {
    nodes: Vec<Node>,
    outputs: Vec<NodeId>,
    plan: Arc<Plan>,
}

/// Plans compiled so far (by a hash of what was recorded, each checked node by node), and
/// what compiling them cost.
#[derive(Default)]
struct Plans {
    plans: HashMap<u64, Vec<Entry>>,
    count: usize,
    hits: u64,
    compile_time: Duration,
}

/// Plans kept at most; past that the cache starts over (shapes without end, say).
const MAX_PLANS: usize = 4096;

fn plans() -> &'static Mutex<Plans> {
    static PLANS: OnceLock<Mutex<Plans>> = OnceLock::new();
    PLANS.get_or_init(Default::default)
}

/// A hash of every node's op, operands and shape (constants by their bits) and of the
/// outputs; cheap enough to take at every evaluation.
fn graph_hash(nodes: &[Node], outputs: &[NodeId]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    for node in nodes {
        match node.op {
            Op::Input(k) => mix(k as u64),
            Op::Constant(v) => mix(1 << 40 | u64::from(v.to_bits())),
            Op::Unary(u, x) => mix(2 << 40 | (u as u64) << 32 | x.0 as u64),
            Op::Binary(o, x, y) => {
                mix(3 << 40 | (o as u64) << 32 | (x.0 as u64) << 16 ^ y.0 as u64)
            }
            Op::Reduce(o, x) => mix(4 << 40 | (o as u64) << 32 | x.0 as u64),
            Op::Product { x, w, bias } => {
                mix(5 << 40 | (x.0 as u64) << 20 | w.0 as u64);
                mix(bias.map_or(0, |b| b.0 as u64 + 1));
            }
        }
        node.shape.iter().for_each(|&d| mix(d as u64));
    }
    outputs.iter().for_each(|o| mix(u64::MAX ^ o.0 as u64));
    h
}

/// The same nodes, constants compared by their bits (0.0 and -0.0 differ).
fn same_nodes(a: &[Node], b: &[Node]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.shape == y.shape
                && match (x.op, y.op) {
                    (Op::Constant(p), Op::Constant(q)) => p.to_bits() == q.to_bits(),
                    (p, q) => p == q,
                }
        })
}

fn cached_plan(graph: &Graph, outputs: &[NodeId]) -> Arc<Plan> {
    let hash = graph_hash(graph.nodes(), outputs);
    let mut cache = plans().lock().expect("plans");
    let found = cache.plans.get(&hash).and_then(|entries| {
        entries
            .iter()
            .find(|e| e.outputs == outputs && same_nodes(&e.nodes, graph.nodes()))
            .map(|e| Arc::clone(&e.plan))
    });
    if let Some(plan) = found {
        cache.hits += 1;
        return plan;
    }
    let start = Instant::now();
    let plan = Arc::new(compile(graph, outputs));
    cache.compile_time += start.elapsed();
    if cache.count >= MAX_PLANS {
        cache.plans.clear();
        cache.count = 0;
    }
    cache.count += 1;
    cache.plans.entry(hash).or_default().push(Entry {
        nodes: graph.nodes().to_vec(),
        outputs: outputs.to_vec(),
        plan: Arc::clone(&plan),
    });
    plan
}

/// How the lazy graphs of this process have compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LazyStats {
    /// Distinct plans compiled (one per graph structure and shapes).
    pub plans: usize,
    /// Evaluations answered by a compiled plan.
    pub hits: u64,
    /// Time spent compiling them all (the graph compile: kernels, steps, memory).
    pub compile_time: Duration,
    /// Modules of generated GPU kernels built so far (one per distinct source), and the
    /// time NVRTC and the driver took to compile and load them.
    pub kernel_modules: usize,
    pub kernel_build_time: Duration,
    /// GPU launches that ran a chain (a kernel of products with the pass before or after
    /// it) as one kernel, queued so far (replays of a captured step not counted).
    pub chained_launches: u64,
}

pub fn stats() -> LazyStats {
    let (kernel_modules, kernel_build_time) = crate::backends::cuda::fused::generated();
    let cache = plans().lock().expect("plans");
    LazyStats {
        plans: cache.count,
        hits: cache.hits,
        compile_time: cache.compile_time,
        kernel_modules,
        kernel_build_time,
        chained_launches: crate::backends::cuda::fused::chained(),
    }
}
