//! Buffers of a plan's kernels in one arena: a buffer lives from the kernel that writes it
//! to the last kernel that reads it (outputs to the end), and a later buffer may take the
//! place of one that died (first fit, lowest offset).

use super::{Kernel, Node};

/// Where a kernel's result lives: `len` f32 values from `offset` in the arena, alive while
/// kernels `first..=last` run.
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
    /// One per kernel, in kernel order.
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

    /// Peak activation bytes.
    pub fn peak_bytes(&self) -> usize {
        4 * self.arena
    }

    /// A pair of buffers that share memory while both are alive, if any (never, for a plan
    /// from [`plan_memory`]; tests and debug runs check it).
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

/// Places the buffer of each kernel's root.
pub(crate) fn plan_memory(nodes: &[Node], kernels: &[Kernel], outputs: &[usize]) -> MemoryPlan {
    let end = kernels.len().saturating_sub(1);
    let mut buffers: Vec<Buffer> = kernels
        .iter()
        .enumerate()
        .map(|(k, kernel)| {
            let last = if outputs.contains(&kernel.root) {
                end
            } else {
                kernels
                    .iter()
                    .enumerate()
                    .filter(|(_, user)| user.reads.contains(&kernel.root))
                    .map(|(u, _)| u)
                    .max()
                    .unwrap_or(k)
            };
            Buffer {
                node: kernel.root,
                offset: 0,
                len: nodes[kernel.root].numel(),
                first: k,
                last,
            }
        })
        .collect();
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
