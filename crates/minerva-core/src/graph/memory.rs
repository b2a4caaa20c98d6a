//! Values kernels pass to each other, in one arena: a buffer lives from the kernel that
//! writes it to the last kernel that reads it, and a later buffer may take the place of one
//! that died (first fit, lowest offset).

use super::{Kernel, Node};

/// Where a value passed between kernels lives: `len` f32 values from `offset` in the arena,
/// alive while kernels `first..=last` run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub node: usize,
    pub offset: usize,
    pub len: usize,
    pub first: usize,
    pub last: usize,
}

impl Buffer {
    /// Whether the two share arena memory.
    pub fn overlaps(&self, other: &Buffer) -> bool {
        self.offset < other.offset + other.len && other.offset < self.offset + self.len
    }

    fn lives_with(&self, other: &Buffer) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    /// One per value passed between kernels, in the order kernels write them.
    pub buffers: Vec<Buffer>,
    /// Arena length (f32 values): the peak of live activations.
    pub arena: usize,
    /// What the buffers would take without reuse.
    pub unshared: usize,
}

impl MemoryPlan {
    /// The buffer holding node `node`'s values, if a kernel writes it.
    pub fn of(&self, node: usize) -> Option<&Buffer> {
        self.buffers.iter().find(|b| b.node == node)
    }

    /// Peak bytes of values passed between kernels.
    pub fn peak_bytes(&self) -> usize {
        4 * self.arena
    }

    /// A pair of buffers that share memory while both are alive, if any (never, for a plan
    /// from `plan_memory`; tests and debug runs check it).
    pub fn aliasing(&self) -> Option<(Buffer, Buffer)> {
        for (i, a) in self.buffers.iter().enumerate() {
            for b in &self.buffers[i + 1..] {
                if a.overlaps(b) && a.lives_with(b) {
                    return Some((*a, *b));
                }
            }
        }
        None
    }
}

/// Places the buffer of each value one kernel writes and later ones read (outputs are not
/// placed: they outlive the plan's run in memory of their own).
pub(crate) fn plan_memory(nodes: &[Node], kernels: &[Kernel], outputs: &[usize]) -> MemoryPlan {
    let mut buffers: Vec<Buffer> = Vec::new();
    for (k, kernel) in kernels.iter().enumerate() {
        for &node in kernel.writes.iter().filter(|w| !outputs.contains(w)) {
            let last = (k..kernels.len())
                .filter(|&u| kernels[u].reads.contains(&node))
                .max()
                .unwrap_or(k);
            buffers.push(Buffer {
                node,
                offset: 0,
                len: nodes[node].numel(),
                first: k,
                last,
            });
        }
    }
    let mut arena = 0;
    for i in 0..buffers.len() {
        // Intervals taken by buffers alive at the same time, by offset.
        let mut taken: Vec<(usize, usize)> = buffers[..i]
            .iter()
            .filter(|b| b.lives_with(&buffers[i]))
            .map(|b| (b.offset, b.offset + b.len))
            .collect();
        taken.sort_unstable();
        let len = buffers[i].len;
        let mut offset = 0;
        for (start, stop) in taken {
            if start >= offset + len {
                break;
            }
            offset = offset.max(stop);
        }
        buffers[i].offset = offset;
        arena = arena.max(offset + len);
    }
    let unshared = buffers.iter().map(|b| b.len).sum();
    MemoryPlan {
        buffers,
        arena,
        unshared,
    }
}
