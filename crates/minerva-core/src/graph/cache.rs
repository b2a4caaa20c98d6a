//! Plans kept per input-shape bucket: a function is traced and compiled the first time it
//! sees a bucket and replayed from then on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{compile, Graph, NodeId, Plan};
use crate::Result;

/// Records the graph of its inputs' node ids into the graph and returns its outputs.
pub type Trace = dyn Fn(&mut Graph, &[NodeId]) -> Result<Vec<NodeId>>;

/// A traced function and its plans, one per bucket of input shapes (a bucket is the exact
/// shapes for now).
pub struct Compiled {
    trace: Box<Trace>,
    plans: HashMap<Vec<Vec<usize>>, Arc<Plan>>,
    hits: usize,
    compile_time: Duration,
}

impl Compiled {
    pub fn new(trace: impl Fn(&mut Graph, &[NodeId]) -> Result<Vec<NodeId>> + 'static) -> Self {
        Compiled {
            trace: Box::new(trace),
            plans: HashMap::new(),
            hits: 0,
            compile_time: Duration::ZERO,
        }
    }

    /// The plan for inputs of `shapes`: traced and compiled on the bucket's first call.
    pub fn plan(&mut self, shapes: &[&[usize]]) -> Result<Arc<Plan>> {
        let key: Vec<Vec<usize>> = shapes.iter().map(|s| s.to_vec()).collect();
        if let Some(plan) = self.plans.get(&key) {
            self.hits += 1;
            return Ok(plan.clone());
        }
        let start = Instant::now();
        let mut graph = Graph::new();
        let inputs: Vec<NodeId> = shapes.iter().map(|s| graph.input(s)).collect();
        let outputs = (self.trace)(&mut graph, &inputs)?;
        let plan = Arc::new(compile(&graph, &outputs));
        self.compile_time += start.elapsed();
        self.plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Calls answered from the cache.
    pub fn hits(&self) -> usize {
        self.hits
    }

    /// Buckets compiled.
    pub fn compiled(&self) -> usize {
        self.plans.len()
    }

    /// Time spent tracing and compiling, all buckets together.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}
