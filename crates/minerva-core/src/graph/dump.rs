//! A plan as text, for a developer to see what fused: one line per kernel, its fused nodes
//! and the buffers it reads and writes.

use std::fmt;

use super::{Op, Plan};

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan: {} nodes recorded, {} live, {} merged, {} kernels, peak {} bytes \
             ({} without reuse)",
            self.recorded,
            self.nodes.len(),
            self.merged,
            self.kernels.len(),
            self.memory.peak_bytes(),
            4 * self.memory.unshared
        )?;
        for (k, kernel) in self.kernels.iter().enumerate() {
            let b = &self.memory.buffers[k];
            let fused: Vec<String> = kernel.fused.iter().map(|&i| node_text(self, i)).collect();
            let reads: Vec<String> = kernel.reads.iter().map(|r| format!("%{r}")).collect();
            writeln!(
                f,
                "k{k}: %{} {:?} at [{}..{}) <- {} | reads {}",
                kernel.root,
                self.nodes[kernel.root].shape,
                b.offset,
                b.offset + b.len,
                fused.join("; "),
                reads.join(" ")
            )?;
        }
        let outputs: Vec<String> = self.outputs.iter().map(|o| format!("%{o}")).collect();
        writeln!(f, "outputs: {}", outputs.join(" "))
    }
}

fn node_text(plan: &Plan, i: usize) -> String {
    let op = match plan.nodes[i].op {
        Op::Input(k) => format!("input {k}"),
        Op::Constant(v) => format!("{v}"),
        Op::Unary(u, x) => format!("{u:?} %{}", x.index()),
        Op::Binary(b, x, y) => format!("{b:?} %{} %{}", x.index(), y.index()),
        Op::Reduce(r, x) => format!("{r:?} %{}", x.index()),
    };
    format!("%{i} = {op}")
}
