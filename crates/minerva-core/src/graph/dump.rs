//! A plan as text, for a developer to see what fused: one line per kernel (its form and
//! domain, the nodes it computes, what it reads and writes), then the buffers between
//! kernels.

use std::fmt;

use super::{Op, Plan};

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan: {} nodes recorded, {} live, {} merged, {} kernels, {} output bytes, \
             {} bytes between kernels at peak ({} without reuse)",
            self.recorded,
            self.nodes.len(),
            self.merged,
            self.kernels.len(),
            self.output_bytes(),
            self.memory.peak_bytes(),
            4 * self.memory.unshared
        )?;
        for (k, kernel) in self.kernels.iter().enumerate() {
            let fused: Vec<String> = kernel.nodes.iter().map(|&i| node_text(self, i)).collect();
            let list = |nodes: &[usize]| -> String {
                let names: Vec<String> = nodes.iter().map(|r| format!("%{r}")).collect();
                names.join(" ")
            };
            let form = match (kernel.products, kernel.reduces) {
                (true, _) => "products",
                (false, true) => "rows",
                (false, false) => "flat",
            };
            writeln!(
                f,
                "k{k} {form} {:?}x{}: {} | reads {} | writes {}",
                kernel.lead,
                kernel.width,
                fused.join("; "),
                list(&kernel.reads),
                list(&kernel.writes)
            )?;
        }
        for b in &self.memory.buffers {
            writeln!(
                f,
                "buffer %{} at [{}..{}), kernels {}..={}",
                b.node,
                b.offset,
                b.offset + b.len,
                b.first,
                b.last
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
        Op::Product { x, w, bias } => match bias {
            Some(b) => format!("Product %{} %{} + %{}", x.index(), w.index(), b.index()),
            None => format!("Product %{} %{}", x.index(), w.index()),
        },
    };
    format!("%{i} = {op}")
}
