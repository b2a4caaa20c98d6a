//! Lazy ops (`graph::lazily`): the elementwise ops, norms and softmax against plain scalar
//! formulas; recorded and fused, they give the bits they give run one by one; values are
//! computed when read, from any thread, and a bad op fails where it is called.

use minerva_core::graph::lazily;
use minerva_core::{ops, Array};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 250.0 - 4.0
        })
        .collect()
}

fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "value {i}: {g} vs {w}"
        );
    }
}

/// The ops against their textbook formulas in f64 (f32 rounding: 1e-6 relative).
#[test]
fn ops_compute_their_formulas() {
    let (rows, d) = (3, 40);
    let (x, y, w) = (values(rows * d, 1), values(rows * d, 2), values(d, 3));
    let xa = Array::from_f32(&x, &[rows, d]).unwrap();
    let ya = Array::from_f32(&y, &[rows, d]).unwrap();
    let wa = Array::from_f32(&w, &[d]).unwrap();
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (xd, yd, wd) = (f64s(&x), f64s(&y), f64s(&w));
    let want = |f: &dyn Fn(&[f64], usize) -> Vec<f64>| -> Vec<f32> {
        (0..rows)
            .flat_map(|r| f(&xd[r * d..(r + 1) * d], r))
            .map(|v| v as f32)
            .collect()
    };
    let got = |a: Array| a.to_f32_vec().unwrap();
    close(
        &got(ops::rms_norm(&xa, &wa, 1e-5).unwrap()),
        &want(&|row, _| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            row.iter().zip(&wd).map(|(v, w)| v * inv * w).collect()
        }),
        1e-6,
    );
    close(
        &got(ops::softmax(&xa).unwrap()),
        &want(&|row, _| {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            row.iter().map(|v| (v - m).exp() / s).collect()
        }),
        1e-6,
    );
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    close(
        &got(ops::swiglu(&xa, &ya).unwrap()),
        &want(&|row, r| {
            let up = &yd[r * d..(r + 1) * d];
            row.iter()
                .zip(up)
                .map(|(g, u)| g * sigmoid(*g) * u)
                .collect()
        }),
        1e-6,
    );
    // Scaled so that values pass the clamp.
    let (x3, y3) = (ops::scale(&xa, 3.0).unwrap(), ops::scale(&ya, 3.0).unwrap());
    close(
        &got(ops::clamped_swiglu(&x3, &y3, 1.702, 7.0).unwrap()),
        &want(&|row, r| {
            let up = &yd[r * d..(r + 1) * d];
            row.iter()
                .zip(up)
                .map(|(g, u)| {
                    let (g, u) = ((3.0 * g).min(7.0), (3.0 * u).clamp(-7.0, 7.0));
                    (u + 1.0) * g * sigmoid(1.702 * g)
                })
                .collect()
        }),
        1e-6,
    );
    close(
        &got(ops::add(&xa, &wa).unwrap()),
        &want(&|row, _| row.iter().zip(&wd).map(|(a, b)| a + b).collect()),
        0.0,
    );
}

/// A residual add and the norm of it, recorded lazily (one pass) and run op by op.
#[test]
fn fused_ops_give_the_bits_of_ops_run_one_by_one() {
    let (rows, d) = (4, 576);
    let x = Array::from_f32(&values(rows * d, 4), &[rows, d]).unwrap();
    let y = Array::from_f32(&values(rows * d, 5), &[rows, d]).unwrap();
    let w = Array::from_f32(&values(d, 6), &[d]).unwrap();
    let step = |x: &Array| -> (Array, Array) {
        let sum = ops::add(x, &y).unwrap();
        let normed = ops::rms_norm(&sum, &w, 1e-5).unwrap();
        let gated = ops::swiglu(&normed, &sum).unwrap();
        (sum, gated)
    };
    let (eager_sum, eager_gated) = step(&x);
    let (lazy_sum, lazy_gated) = lazily(|| step(&x));
    assert_eq!(
        lazy_sum.to_f32_vec().unwrap(),
        eager_sum.to_f32_vec().unwrap()
    );
    assert_eq!(
        lazy_gated.to_f32_vec().unwrap(),
        eager_gated.to_f32_vec().unwrap()
    );
}

#[test]
fn pending_values_compute_when_read_from_any_thread() {
    let x = Array::from_f32(&[1.0, -2.0, 3.0, 0.5], &[2, 2]).unwrap();
    let (a, b) = lazily(|| {
        let a = ops::scale(&x, 2.0).unwrap();
        let b = ops::add(&a, &x).unwrap();
        (a, b)
    });
    // Shape and device are known before anything runs.
    assert_eq!(b.shape(), [2, 2]);
    let b = std::thread::spawn(move || b.to_f32_vec().unwrap())
        .join()
        .unwrap();
    assert_eq!(b, [3.0, -6.0, 9.0, 1.5]);
    assert_eq!(a.to_f32_vec().unwrap(), [2.0, -4.0, 6.0, 1.0]);
    // Reshaping a pending value computes it; views of it read the values.
    let c = lazily(|| ops::scale(&x, -1.0).unwrap().reshape(&[4]).unwrap());
    assert_eq!(c.to_f32_vec().unwrap(), [-1.0, 2.0, -3.0, -0.5]);
}

#[test]
fn a_bad_op_fails_where_it_is_called() {
    let x = Array::from_f32(&[1.0; 6], &[2, 3]).unwrap();
    let y = Array::from_f32(&[1.0; 4], &[4]).unwrap();
    let ids = Array::from_i32(&[1, 2, 3], &[3]).unwrap();
    lazily(|| {
        assert!(ops::add(&x, &y).is_err(), "shapes that do not broadcast");
        assert!(ops::add(&x, &ids).is_err(), "i32 values");
        // The recording goes on after a refused op.
        let z = ops::scale(&x, 3.0).unwrap();
        assert_eq!(z.to_f32_vec().unwrap(), [3.0; 6]);
    });
}

/// Products recorded lazily: the q, k and v of one input (f32 with a bias, MXFP4, MLX
/// affine 4-bit) make one kernel of products, then a gated activation of two of them a
/// pass; the values are the bits of the ops run one by one.
#[test]
fn products_of_one_input_run_together_and_give_the_eager_bits() {
    let (tokens, k) = (3, 64);
    let x = Array::from_f32(&values(tokens * k, 7), &[tokens, k]).unwrap();
    let dense = |n: usize, seed: u32| Array::from_f32(&values(n * k, seed), &[n, k]).unwrap();
    let wq = dense(32, 8);
    let bias = Array::from_f32(&values(32, 9), &[32]).unwrap();
    let wk = ops::quantize(&dense(16, 10), minerva_core::DType::Mxfp4).unwrap();
    let affine = minerva_core::DType::Affine { bits: 4, group: 32 };
    let wv = ops::quantize(&dense(16, 11), affine).unwrap();
    let step = || {
        let q = ops::linear(&x, &wq, Some(&bias)).unwrap();
        let k = ops::linear(&x, &wk, None).unwrap();
        let v = ops::linear(&x, &wv, None).unwrap();
        let gated = ops::swiglu(&k, &v).unwrap();
        [q, k, v, gated].map(|a| a.to_f32_vec().unwrap())
    };
    let eager = step();
    let (lazy, plans) = minerva_core::graph::traced(|| lazily(step));
    assert_eq!(lazy, eager);
    // The first read computes everything recorded: the three products in one kernel,
    // then the gated activation.
    let plan = &plans[0];
    assert_eq!(plan.launches(), 2, "{plan}");
    assert!(
        plan.kernels[0].products && plan.kernels[0].steps.len() == 3,
        "{plan}"
    );
    // A weight that does not fit fails where it is called.
    lazily(|| assert!(ops::linear(&x, &dense(8, 1).reshape(&[4, 128]).unwrap(), None).is_err()));
}

/// Products of a plan run on the thread pool, whose threads take up other work while they
/// wait: here other threads' lazy passes (each run inside the pool, as the engine runs a
/// forward pass), which then record on the same thread, into the next generation of the
/// graph being evaluated (so its evaluation must not hold the graph's lock).
#[test]
fn lazy_passes_on_the_threads_a_plan_runs_on_go_on() {
    let k = 1024;
    let w = |seed: u32| Array::from_f32(&values(1024 * k, seed), &[1024, k]).unwrap();
    let (gate, up) = (w(12), w(13));
    let pass = |i: u32| {
        let x = Array::from_f32(&values(k, 20 + i), &[1, k]).unwrap();
        let gated = ops::swiglu(
            &ops::linear(&x, &gate, None).unwrap(),
            &ops::linear(&x, &up, None).unwrap(),
        )
        .unwrap();
        gated.to_f32_vec().unwrap()
    };
    let eager: Vec<Vec<f32>> = (0..4).map(pass).collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for (i, want) in eager.iter().enumerate() {
                    let got = rayon::scope(|_| lazily(|| pass(i as u32)));
                    assert_eq!(&got, want);
                }
            });
        }
    });
}
