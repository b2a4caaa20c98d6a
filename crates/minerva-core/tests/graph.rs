//! Compiled graphs against node-by-node evaluation: random graphs of elementwise ops,
//! broadcasts and row reductions give the same bits fused and unfused (CPU, f32), memory
//! plans never share a live buffer (checked by the planner's own check and by poisoning
//! freed buffers), and plans are compiled once per input shapes.

#[path = "common/random_graph.rs"]
mod random_graph;

use minerva_core::backends::cpu::fused::{run_plan, run_unfused};
use minerva_core::graph::{compile, Binary, Compiled, Graph, Reduce, Unary};
use random_graph::{input_values, random_graph, same_bits, Rng, UNARY};

#[test]
fn fused_plans_match_node_by_node_evaluation_bit_for_bit() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut kernels, mut nodes) = (0, 0);
    for case in 0..500 {
        let (g, outputs) = random_graph(&mut rng, &UNARY, &[Reduce::Sum, Reduce::Max]);
        let input_values = input_values(&mut rng, &g);
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
    // Three passes over ever more rows, each reading the one before: two buffers between
    // kernels, both alive while the middle pass runs.
    let mut g = Graph::new();
    let x = g.input(&[4, 8]);
    let y = g.input(&[2, 4, 8]);
    let z = g.input(&[3, 2, 4, 8]);
    let a = g.unary(Unary::Exp, x);
    let b = g.binary(Binary::Mul, y, a).unwrap();
    let c = g.binary(Binary::Sub, z, b).unwrap();
    let plan = compile(&g, &[c]);
    assert_eq!(
        (plan.launches(), plan.memory.buffers.len()),
        (3, 2),
        "{plan}"
    );
    let mut rng = Rng(7);
    let values = [rng.values(32), rng.values(64), rng.values(192)];
    let inputs: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
    let want = run_unfused(&g, &[c], &inputs).unwrap();
    assert!(same_bits(&run_plan(&plan, &inputs, true).unwrap(), &want));
    // Every buffer at offset 0: the planner's check and the run both refuse it.
    let mut bad = plan.clone();
    for b in &mut bad.memory.buffers {
        b.offset = 0;
    }
    assert!(bad.memory.aliasing().is_some());
    match run_plan(&bad, &inputs, true) {
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
    // RMS norm: the squares, their sum, its epilogue and the scaling in one row pass.
    assert_eq!(a.launches(), 1, "{a}");
    assert!(
        f.plan(&[&[3, 8], &[4]]).is_err(),
        "shapes that do not broadcast"
    );
}
