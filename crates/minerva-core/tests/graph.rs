//! Compiled graphs against node-by-node evaluation: random graphs of elementwise ops,
//! broadcasts and row reductions give the same bits fused and unfused (CPU, f32), memory
//! plans never share a live buffer (checked by the planner's own check and by poisoning
//! freed buffers), and plans are compiled once per input shapes.

use minerva_core::backends::cpu::fused::{run_plan, run_unfused};
use minerva_core::graph::{compile, Binary, Compiled, Graph, NodeId, Reduce, Unary};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.below(4001) as f32 - 2000.0) / 1000.0)
            .collect()
    }
}

const UNARY: [Unary; 9] = [
    Unary::Neg,
    Unary::Exp,
    Unary::Recip,
    Unary::Sqrt,
    Unary::Rsqrt,
    Unary::Square,
    Unary::Sigmoid,
    Unary::Silu,
    Unary::Tanh,
];
const BINARY: [Binary; 6] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Max,
    Binary::Min,
];

/// A random graph over inputs that broadcast to `[rows, cols]`, and some of its nodes as
/// outputs.
fn random_graph(rng: &mut Rng) -> (Graph, Vec<NodeId>) {
    let (rows, cols) = (1 + rng.below(5), 1 + rng.below(9));
    let shapes = [vec![rows, cols], vec![cols], vec![rows, 1], vec![1, cols]];
    let mut g = Graph::new();
    let mut nodes: Vec<NodeId> = (0..1 + rng.below(3))
        .map(|_| g.input(&shapes[rng.below(shapes.len())]))
        .collect();
    nodes.push(g.constant(0.5));
    for _ in 0..4 + rng.below(20) {
        let pick = |rng: &mut Rng, nodes: &[NodeId]| nodes[rng.below(nodes.len())];
        let id = match rng.below(10) {
            0..=3 => g.unary(UNARY[rng.below(UNARY.len())], pick(rng, &nodes)),
            4..=7 => {
                let (a, b) = (pick(rng, &nodes), pick(rng, &nodes));
                g.binary(BINARY[rng.below(BINARY.len())], a, b)
                    .expect("they broadcast")
            }
            _ => {
                let x = pick(rng, &nodes);
                if g.shape(x).is_empty() {
                    continue;
                }
                let op = if rng.below(2) == 0 {
                    Reduce::Sum
                } else {
                    Reduce::Max
                };
                g.reduce(op, x).unwrap()
            }
        };
        nodes.push(id);
    }
    let outputs = (0..1 + rng.below(3))
        .map(|_| nodes[nodes.len() - 1 - rng.below(nodes.len().min(4))])
        .collect();
    (g, outputs)
}

fn same_bits(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()))
        })
}

#[test]
fn fused_plans_match_node_by_node_evaluation_bit_for_bit() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut kernels, mut nodes) = (0, 0);
    for case in 0..500 {
        let (g, outputs) = random_graph(&mut rng);
        let input_values: Vec<Vec<f32>> = g
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, minerva_core::graph::Op::Input(_)))
            .map(|n| rng.values(n.numel()))
            .collect();
        let inputs: Vec<&[f32]> = input_values.iter().map(Vec::as_slice).collect();
        let want = run_unfused(&g, &outputs, &inputs).unwrap();
        let plan = compile(&g, &outputs);
        assert_eq!(plan.memory.aliasing(), None, "case {case}:\n{plan}");
        assert!(plan.memory.arena <= plan.memory.unshared);
        for poison in [false, true] {
            let got = run_plan(&plan, &inputs, poison).unwrap();
            assert!(
                same_bits(&got, &want),
                "case {case} (poison {poison}):\n{plan}"
            );
        }
        kernels += plan.launches();
        nodes += plan.nodes.len();
    }
    eprintln!("500 random graphs: {nodes} live nodes in {kernels} fused kernels");
    assert!(kernels < nodes / 2, "fusion should merge most nodes");
}

#[test]
fn a_plan_that_shares_live_memory_is_caught() {
    let mut g = Graph::new();
    let x = g.input(&[4, 8]);
    let e = g.unary(Unary::Exp, x);
    let s = g.reduce(Reduce::Sum, e).unwrap();
    let y = g.binary(Binary::Div, e, s).unwrap(); // softmax: e is read by two kernels
    let plan = compile(&g, &[y]);
    let mut rng = Rng(7);
    let values = rng.values(32);
    let want = run_unfused(&g, &[y], &[&values]).unwrap();
    assert!(same_bits(
        &run_plan(&plan, &[&values], true).unwrap(),
        &want
    ));
    // Every buffer at offset 0: the planner's check and the run both refuse it.
    let mut bad = plan.clone();
    for b in &mut bad.memory.buffers {
        b.offset = 0;
    }
    assert!(bad.memory.aliasing().is_some());
    match run_plan(&bad, &[&values], true) {
        Err(_) => {}
        Ok(got) => assert!(
            !same_bits(&got, &want),
            "a shared live buffer went unnoticed"
        ),
    }
}

#[test]
fn plans_are_compiled_once_per_input_shapes() {
    let mut f = Compiled::new(|g, inputs| Ok(vec![g.rms_norm(inputs[0], inputs[1], 1e-5)?]));
    let a = f.plan(&[&[3, 8], &[8]]).unwrap();
    let b = f.plan(&[&[3, 8], &[8]]).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert_eq!((f.hits(), f.compiled()), (1, 1));
    f.plan(&[&[5, 8], &[8]]).unwrap();
    assert_eq!((f.hits(), f.compiled()), (1, 2));
    // RMS norm: the squares, their sum and its epilogue in one pass, the scaling in another.
    assert_eq!(a.launches(), 2, "{a}");
    assert!(
        f.plan(&[&[3, 8], &[4]]).is_err(),
        "shapes that do not broadcast"
    );
}
