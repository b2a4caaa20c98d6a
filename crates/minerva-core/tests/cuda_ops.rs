//! Every CUDA op against the CPU backend on random inputs (odd sizes included). Skips, with
//! a message, on machines where no GPU can be opened; `scripts/gpu-check` runs it on one.
//!
//! Tolerance: max |gpu - cpu| / max |cpu| ≤ 1e-4 where both compute in f32 (they differ in
//! summation order and fused multiply-adds); 2e-3 for attention over an f16 cache, where
//! the CPU also rounds the probabilities to f16 (relative 4.9e-4 each) and the GPU does not.
//! Matrix products are checked against the CPU product with the weight dequantized to f32:
//! the CPU's GGUF kernels quantize activations to 8 bits (as llama.cpp does), the GPU's keep
//! them in f32, so the f32 product is the reference for both. MXFP4's one-token products
//! multiply in f16 (activations rounded to f16, relative 4.9e-4, eight products summed in
//! f16, as MLX runs gpt-oss with 16-bit activations): 2e-3 there, like the f16 cache.
//! Plain 8-bit affine products (groups of 64 or 128) of [`TENSOR_MIN_ROWS`] rows or more
//! run on tensor cores with the activations rounded to f16 (weights enter exactly, sums are
//! f32): 2e-3 there too.
//! Products of [`PROMPT_TOKENS`] or more tokens run on tensor cores (cuBLAS) with f16
//! operands, weights and activations each rounded to f16 (relative 4.9e-4) and f32 sums:
//! 2e-3 for every format there.

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/random_graph.rs"]
mod random_graph;

use fixtures::{dense, dequantized, gguf, relative_error, Rng};

use minerva_core::ops::{
    self, AttentionOptions, Draw, ExpertGateUp, Rope, RopeStyle, SampleSettings, SwigluExperts,
};
use minerva_core::{Array, DType, Device, KvDType, KvPages, PageTable};

const GPU: Device = Device::Cuda(0);

fn gpu_ready(test: &str) -> bool {
    match minerva_core::backends::cuda::device(0) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable GPU ({e})");
            false
        }
    }
}

fn gpu(a: &Array) -> Array {
    a.to_device(GPU).unwrap()
}

/// Tokens from which products go to tensor cores (`GEMM_MIN_TOKENS` in the backend).
const PROMPT_TOKENS: usize = 32;

/// Rows from which plain 8-bit affine products run on tensor cores (`TENSOR_MIN_ROWS` in
/// the backend).
const TENSOR_MIN_ROWS: usize = 2048;

/// The tolerance for a product of `tokens` tokens with weights of format `name` (see the
/// module comment).
fn product_tolerance(name: &str, tokens: usize) -> f32 {
    if name == "mxfp4" || tokens >= PROMPT_TOKENS {
        2e-3
    } else {
        1e-4
    }
}

/// The tolerance for a plain product of `tokens` tokens with `n` rows of format `name`.
fn linear_tolerance(name: &str, n: usize, tokens: usize) -> f32 {
    let tensor_cores = name.starts_with("affine8g64") || name == "affine8g128";
    if tensor_cores && n >= TENSOR_MIN_ROWS {
        2e-3
    } else {
        product_tolerance(name, tokens)
    }
}

fn assert_close(what: &str, gpu: &Array, cpu: &Array, tolerance: f32) {
    assert_eq!(gpu.device(), GPU, "{what}: computed on the GPU");
    let err = relative_error(gpu, cpu);
    assert!(
        err <= tolerance,
        "{what}: relative error {err:e} > {tolerance:e}"
    );
}

/// Every weight format the kernels read, as `[n, k]` (or a stack `[e, n, k]`).
fn weights(rng: &mut Rng, shape: &[usize]) -> Vec<(String, Array)> {
    let numel: usize = shape.iter().product();
    let values = rng.vec(numel);
    let f32w = Array::from_f32(&values, shape).unwrap();
    let mut all = vec![
        ("f32".to_string(), f32w.clone()),
        ("f16".into(), dense(&values, shape, DType::F16)),
        ("bf16".into(), dense(&values, shape, DType::BF16)),
        ("mxfp4".into(), ops::quantize(&f32w, DType::Mxfp4).unwrap()),
    ];
    for bits in [2u8, 3, 4, 5, 6, 8] {
        for group in [32u16, 64, 128] {
            if shape.last().unwrap().is_multiple_of(group as usize) {
                let dtype = DType::Affine { bits, group };
                all.push((dtype.to_string(), ops::quantize(&f32w, dtype).unwrap()));
            }
        }
    }
    let bf = dense(&values, shape, DType::BF16);
    all.push((
        "affine8g64(bf16)".into(),
        ops::quantize(&bf, DType::Affine { bits: 8, group: 64 }).unwrap(),
    ));
    for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
        all.push((dtype.to_string(), gguf(rng, dtype, shape)));
    }
    all
}

#[test]
fn linear_every_weight_format() {
    if !gpu_ready("linear_every_weight_format") {
        return;
    }
    if !minerva_core::backends::cuda::device(0).unwrap().has_blas() {
        eprintln!("SKIPPED tensor-core products: cuBLAS not available (the fallback is tested)");
    }
    let mut rng = Rng(1);
    // The last three shapes take the streaming kernels with 1, 2 and 4 rows per warp (on a
    // 132-SM GPU), each with a partial last block; k = 2880 needs two batches of chunks.
    for (n, k) in [
        (37, 128),
        (64, 256),
        (5, 384),
        (1101, 2880),
        (2201, 256),
        (4229, 256),
    ] {
        for (name, w) in weights(&mut rng, &[n, k]) {
            let wg = gpu(&w);
            let exact = dequantized(&w);
            let bias = rng.array(&[n]);
            for tokens in [1, 3, 9, 17, PROMPT_TOKENS + 8] {
                let x = rng.array(&[tokens, k]);
                let cpu = ops::linear(&x, &exact, Some(&bias)).unwrap();
                let got = ops::linear(&gpu(&x), &wg, Some(&gpu(&bias))).unwrap();
                assert_close(
                    &format!("linear {name} [{n},{k}] x{tokens}"),
                    &got,
                    &cpu,
                    linear_tolerance(&name, n, tokens),
                );
            }
        }
    }
    // Dense rows whose length is no multiple of 4 take the one-value path.
    let w = rng.array(&[7, 13]);
    let x = rng.array(&[2, 13]);
    let cpu = ops::linear(&x, &w, None).unwrap();
    assert_close(
        "linear f32 k=13",
        &ops::linear(&gpu(&x), &gpu(&w), None).unwrap(),
        &cpu,
        1e-4,
    );
}

#[test]
fn gather_linear_reads_the_chosen_experts() {
    if !gpu_ready("gather_linear_reads_the_chosen_experts") {
        return;
    }
    let mut rng = Rng(2);
    // n large enough for the 4-rows-per-block kernels.
    let (experts, n, k, tokens, slots) = (5, 360, 64, 3, 2);
    let ids = Array::from_i32(&[4, 0, 2, 2, 1, 3], &[tokens, slots]).unwrap();
    for (name, w) in weights(&mut rng, &[experts, n, k]) {
        let bias = rng.array(&[experts, n]);
        let exact = dequantized(&w);
        for x in [rng.array(&[tokens, k]), rng.array(&[tokens, slots, k])] {
            let cpu = ops::gather_linear(&x, &exact, Some(&bias), &ids).unwrap();
            let got =
                ops::gather_linear(&gpu(&x), &gpu(&w), Some(&gpu(&bias)), &gpu(&ids)).unwrap();
            assert_close(
                &format!("gather_linear {name} x{:?}", x.shape()),
                &got,
                &cpu,
                product_tolerance(&name, 1),
            );
        }
    }
}

/// The fused expert kernels (both gate/up layouts, 4 and more than 4 experts per token)
/// against the CPU's composition of plain ops with the weights dequantized.
#[test]
fn mixture_of_experts_fused() {
    if !gpu_ready("mixture_of_experts_fused") {
        return;
    }
    let mut rng = Rng(10);
    // (experts, hidden, inter, tokens, experts per token)
    for (experts, hidden, inter, tokens, k) in [
        (8, 256, 192, 1, 4),
        (6, 128, 320, 3, 4),
        (9, 64, 128, 2, 6),
        (4, 128, 192, 20, 3),
        (8, 256, 192, 40, 4),
    ] {
        let mut ids = Vec::new();
        for t in 0..tokens {
            ids.extend((0..k).map(|j| ((t * 5 + j * 7) % experts) as i32));
        }
        let ids = Array::from_i32(&ids, &[tokens, k]).unwrap();
        let mix = ops::softmax(&rng.array(&[tokens, k])).unwrap();
        let x = ops::scale(&rng.array(&[tokens, hidden]), 2.0).unwrap();
        for dtype in [
            DType::Mxfp4,
            DType::Affine { bits: 8, group: 64 },
            DType::Affine { bits: 4, group: 32 },
        ] {
            let mut quant = |shape: &[usize]| ops::quantize(&rng.array(shape), dtype).unwrap();
            let (gate_up, down) = (
                quant(&[experts, 2 * inter, hidden]),
                quant(&[experts, hidden, inter]),
            );
            let (gate, up) = (
                quant(&[experts, inter, hidden]),
                quant(&[experts, inter, hidden]),
            );
            let biases = [
                rng.array(&[experts, 2 * inter]),
                rng.array(&[experts, inter]),
                rng.array(&[experts, inter]),
                rng.array(&[experts, hidden]),
            ];
            let layouts = |at: &dyn Fn(&Array) -> Array| {
                [
                    ExpertGateUp::Interleaved {
                        weight: at(&gate_up),
                        bias: at(&biases[0]),
                    },
                    ExpertGateUp::Separate {
                        gate: at(&gate),
                        gate_bias: at(&biases[1]),
                        up: at(&up),
                        up_bias: at(&biases[2]),
                    },
                ]
            };
            let (on_cpu, on_gpu) = (layouts(&dequantized), layouts(&gpu));
            let (down_cpu, down_gpu) = (dequantized(&down), gpu(&down));
            let bias_gpu = gpu(&biases[3]);
            for (cpu_layout, gpu_layout) in on_cpu.iter().zip(&on_gpu) {
                let stack = |gate_up, down, down_bias| SwigluExperts {
                    gate_up,
                    down,
                    down_bias,
                    alpha: 1.702,
                    limit: 7.0,
                };
                let want = ops::mixture_of_experts(
                    &x,
                    &stack(cpu_layout, &down_cpu, &biases[3]),
                    &ids,
                    &mix,
                )
                .unwrap();
                let got = ops::mixture_of_experts(
                    &gpu(&x),
                    &stack(gpu_layout, &down_gpu, &bias_gpu),
                    &gpu(&ids),
                    &gpu(&mix),
                )
                .unwrap();
                let what = format!(
                    "mixture_of_experts {dtype} {} tokens {tokens} top-{k}",
                    match cpu_layout {
                        ExpertGateUp::Interleaved { .. } => "interleaved",
                        ExpertGateUp::Separate { .. } => "separate",
                    }
                );
                eprintln!("{what}: relative error {:.1e}", relative_error(&got, &want));
                let name = if dtype == DType::Mxfp4 {
                    "mxfp4"
                } else {
                    "affine"
                };
                assert_close(&what, &got, &want, product_tolerance(name, tokens));
            }
        }
    }
}

/// Batch invariance of the streaming products: a token's row of a few-token product (weights
/// and experts) has the same bits as that token's product alone, as batched decode needs to
/// give each sequence the tokens it would get alone.
#[test]
fn few_token_products_match_one_token_bit_for_bit() {
    if !gpu_ready("few_token_products_match_one_token_bit_for_bit") {
        return;
    }
    let mut rng = Rng(11);
    // 20 tokens: the tensor-core products take 16 a pass.
    let (experts, hidden, inter, tokens, k) = (8, 2880, 256, 20, 4);
    let mut ids = Vec::new();
    for t in 0..tokens {
        ids.extend((0..k).map(|j| ((t * 3 + j * 5) % experts) as i32));
    }
    let ids = Array::from_i32(&ids, &[tokens, k]).unwrap();
    let mix = ops::softmax(&rng.array(&[tokens, k])).unwrap();
    let x = ops::scale(&rng.array(&[tokens, hidden]), 2.0).unwrap();
    let row =
        |a: &Array, t: usize| a.to_f32_vec().unwrap()[t * a.dim(1)..(t + 1) * a.dim(1)].to_vec();
    let one = |a: &Array, t: usize| {
        let w = a.dim(1);
        let host = a.to_device(Device::Cpu).unwrap();
        if a.dtype() == DType::I32 {
            Array::from_i32(&host.as_i32().unwrap()[t * w..(t + 1) * w], &[1, w]).unwrap()
        } else {
            Array::from_f32(&host.to_f32_vec().unwrap()[t * w..(t + 1) * w], &[1, w]).unwrap()
        }
    };
    for dtype in [
        DType::Mxfp4,
        DType::Affine { bits: 8, group: 64 },
        DType::Affine { bits: 4, group: 32 },
    ] {
        // Streaming products, and for 8-bit affine tensor-core ones (TENSOR_MIN_ROWS).
        let dense: Vec<_> = [1100, 2304]
            .iter()
            .map(|&n| {
                let w = gpu(&ops::quantize(&rng.array(&[n, hidden]), dtype).unwrap());
                let bias = gpu(&rng.array(&[n]));
                let all = ops::linear(&gpu(&x), &w, Some(&bias)).unwrap();
                (w, bias, all)
            })
            .collect();
        let gate_up =
            gpu(&ops::quantize(&rng.array(&[experts, 2 * inter, hidden]), dtype).unwrap());
        let down = gpu(&ops::quantize(&rng.array(&[experts, hidden, inter]), dtype).unwrap());
        let (gate_up_bias, down_bias) = (
            gpu(&rng.array(&[experts, 2 * inter])),
            gpu(&rng.array(&[experts, hidden])),
        );
        let stack = SwigluExperts {
            gate_up: &ExpertGateUp::Interleaved {
                weight: gate_up.clone(),
                bias: gate_up_bias.clone(),
            },
            down: &down,
            down_bias: &down_bias,
            alpha: 1.702,
            limit: 7.0,
        };
        let moe = ops::mixture_of_experts(&gpu(&x), &stack, &gpu(&ids), &gpu(&mix)).unwrap();
        for t in 0..tokens {
            for (w, bias, all) in &dense {
                let alone = ops::linear(&gpu(&one(&x, t)), w, Some(bias)).unwrap();
                let what = format!("linear {dtype} {:?}: token {t}", w.shape());
                assert_eq!(row(all, t), row(&alone, 0), "{what}");
            }
            let alone = ops::mixture_of_experts(
                &gpu(&one(&x, t)),
                &stack,
                &gpu(&one(&ids, t)),
                &gpu(&one(&mix, t)),
            )
            .unwrap();
            assert_eq!(
                row(&moe, t),
                row(&alone, 0),
                "mixture_of_experts {dtype}: token {t}"
            );
        }
    }
}

#[test]
fn embedding_every_table_format() {
    if !gpu_ready("embedding_every_table_format") {
        return;
    }
    let mut rng = Rng(3);
    let ids = Array::from_i32(&[3, 0, 9, 3], &[4]).unwrap();
    for (name, table) in weights(&mut rng, &[10, 128]) {
        let cpu = ops::embedding(&table, &ids).unwrap();
        let tg = gpu(&table);
        assert_close(
            &format!("embedding {name}"),
            &ops::embedding(&tg, &ids).unwrap(),
            &cpu,
            1e-6,
        );
        assert_close(
            &format!("embedding {name} (device ids)"),
            &ops::embedding(&tg, &gpu(&ids)).unwrap(),
            &cpu,
            1e-6,
        );
    }
    assert!(ops::embedding(
        &gpu(&rng.array(&[10, 4])),
        &Array::from_i32(&[10], &[1]).unwrap()
    )
    .is_err());
}

#[test]
fn elementwise_and_row_ops() {
    if !gpu_ready("elementwise_and_row_ops") {
        return;
    }
    let mut rng = Rng(4);
    for d in [37, 576, 2880] {
        let (a, b, row) = (rng.array(&[3, d]), rng.array(&[3, d]), rng.array(&[d]));
        let (ga, gb, grow) = (gpu(&a), gpu(&b), gpu(&row));
        assert_close(
            "add",
            &ops::add(&ga, &gb).unwrap(),
            &ops::add(&a, &b).unwrap(),
            1e-6,
        );
        assert_close(
            "add bcast",
            &ops::add(&ga, &grow).unwrap(),
            &ops::add(&a, &row).unwrap(),
            1e-6,
        );
        assert_close(
            "mul bcast",
            &ops::mul(&ga, &grow).unwrap(),
            &ops::mul(&a, &row).unwrap(),
            1e-6,
        );
        assert_close(
            "scale",
            &ops::scale(&ga, 0.3).unwrap(),
            &ops::scale(&a, 0.3).unwrap(),
            1e-6,
        );
        let norm = ops::rms_norm(&a, &row, 1e-5).unwrap();
        assert_close(
            "rms_norm",
            &ops::rms_norm(&ga, &grow, 1e-5).unwrap(),
            &norm,
            1e-5,
        );
        // Recorded lazily, the residual sum and its norm are one pass.
        let add_norm = |x: &Array, y: &Array, w: &Array| {
            minerva_core::graph::lazily(|| {
                let sum = ops::add(x, y).unwrap();
                let normed = ops::rms_norm(&sum, w, 1e-5).unwrap();
                (sum, normed)
            })
        };
        let (sum, normed) = add_norm(&a, &b, &row);
        let (gsum, gnormed) = add_norm(&ga, &gb, &grow);
        assert_close("lazy add, rms_norm: sum", &gsum, &sum, 1e-6);
        assert_close("lazy add, rms_norm: norm", &gnormed, &normed, 1e-5);
        let big = ops::scale(&a, 8.0).unwrap();
        assert_close(
            "softmax",
            &ops::softmax(&gpu(&big)).unwrap(),
            &ops::softmax(&big).unwrap(),
            1e-5,
        );
        assert_close(
            "silu",
            &ops::silu(&ga).unwrap(),
            &ops::silu(&a).unwrap(),
            1e-5,
        );
        assert_close(
            "swiglu",
            &ops::swiglu(&ga, &gb).unwrap(),
            &ops::swiglu(&a, &b).unwrap(),
            1e-5,
        );
        // Values beyond the clamp exercise it.
        let (a8, b8) = (ops::scale(&a, 10.0).unwrap(), ops::scale(&b, 10.0).unwrap());
        assert_close(
            "clamped_swiglu",
            &ops::clamped_swiglu(&gpu(&a8), &gpu(&b8), 1.702, 7.0).unwrap(),
            &ops::clamped_swiglu(&a8, &b8, 1.702, 7.0).unwrap(),
            1e-5,
        );
    }
    let x = rng.array(&[2, 3, 10]);
    let (ce, co) = ops::deinterleave(&x).unwrap();
    let (ge, go) = ops::deinterleave(&gpu(&x)).unwrap();
    assert_close("deinterleave even", &ge, &ce, 0.0);
    assert_close("deinterleave odd", &go, &co, 0.0);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let t = dense(&rng.vec(2 * 5 * 7), &[2, 5, 7], dtype);
        let cpu = ops::transpose_last2(&t).unwrap();
        assert_close(
            &format!("transpose {dtype}"),
            &ops::transpose_last2(&gpu(&t)).unwrap(),
            &cpu,
            0.0,
        );
    }
    let rows = ops::slice_rows(&gpu(&x), 1, 1).unwrap();
    assert_close(
        "slice_rows",
        &rows,
        &ops::slice_rows(&x, 1, 1).unwrap(),
        0.0,
    );
}

#[test]
fn rope_both_styles_partial_and_scaled() {
    if !gpu_ready("rope_both_styles_partial_and_scaled") {
        return;
    }
    let mut rng = Rng(5);
    let pos = Array::from_i32(&[0, 7, 4095, 70000], &[4]).unwrap();
    for (head_dim, rotated) in [(64, 64), (64, 32), (128, 128)] {
        let inv_freq: Vec<f32> = (0..rotated / 2)
            .map(|i| 1.0 / 150000f32.powf(2.0 * i as f32 / rotated as f32))
            .collect();
        for style in [RopeStyle::Interleaved, RopeStyle::Half] {
            let rope = Rope {
                inv_freq: inv_freq.clone(),
                style,
                mscale: 1.35,
            };
            let x = rng.array(&[4, 3, head_dim]);
            let cpu = ops::rope(&x, &pos, &rope).unwrap();
            let got = ops::rope(&gpu(&x), &gpu(&pos), &rope).unwrap();
            assert_close(
                &format!("rope {style:?} {rotated}/{head_dim}"),
                &got,
                &cpu,
                1e-4,
            );
        }
    }
}

#[test]
fn moe_routing_and_mixing() {
    if !gpu_ready("moe_routing_and_mixing") {
        return;
    }
    let mut rng = Rng(6);
    for (tokens, experts, k) in [(1, 32, 4), (5, 32, 4), (3, 7, 2), (2, 40, 3)] {
        let mut scores = rng.vec(tokens * experts);
        scores[1] = scores[0]; // a tie goes to the lower index on both
        let scores = Array::from_f32(&scores, &[tokens, experts]).unwrap();
        let (ci, cw) = ops::top_k_softmax(&scores, k).unwrap();
        let (gi, gw) = ops::top_k_softmax(&gpu(&scores), k).unwrap();
        assert_eq!(
            gi.to_f32_vec().unwrap(),
            ci.to_f32_vec().unwrap(),
            "top-{k} ids"
        );
        assert_close("top-k weights", &gw, &cw, 1e-6);
        let y = rng.array(&[tokens, k, 19]);
        assert_close(
            "weighted_sum",
            &ops::weighted_sum(&gpu(&y), &gw).unwrap(),
            &ops::weighted_sum(&y, &cw).unwrap(),
            1e-6,
        );
    }
}

#[test]
fn argmax_rows() {
    if !gpu_ready("argmax_rows") {
        return;
    }
    let mut rng = Rng(8);
    // One slice per row, several slices, and a vocabulary the size of gpt-oss's.
    for (rows, n) in [(1, 7), (3, 4096), (2, 10_000), (1, 201_088)] {
        let mut values = rng.vec(rows * n);
        // The maximum twice in the last row, in different slices: the lower index wins.
        let last = &mut values[(rows - 1) * n..];
        let (a, b) = (n / 3, n - 1);
        last[a] = 2.0;
        last[b] = 2.0;
        let x = Array::from_f32(&values, &[rows, n]).unwrap();
        let want = ops::argmax(&x).unwrap();
        let got = ops::argmax(&gpu(&x)).unwrap();
        assert_eq!(want.as_i32().unwrap()[rows - 1], a as i32);
        assert_eq!(
            got.to_device(Device::Cpu).unwrap().as_i32().unwrap(),
            want.as_i32().unwrap(),
            "argmax of [{rows}, {n}]"
        );
    }
}

/// Seeded draws pick the same tokens on the GPU as on the CPU, for every mix of
/// temperature, top-k, top-p and min-p, over a vocabulary the size of gpt-oss's.
#[test]
fn sampling_matches_the_cpu() {
    if !gpu_ready("sampling_matches_the_cpu") {
        return;
    }
    let mut rng = Rng(21);
    for (rows, n) in [(1, 7), (2, 201_088)] {
        // Logits spread over ~16 nats like a model's, with a few standing out.
        let mut values: Vec<f32> = rng.vec(rows * n).iter().map(|v| 8.0 * v).collect();
        for r in 0..rows {
            values[r * n + (n / 2 + r) % n] = 11.0;
            values[r * n + (n / 5) % n] = 10.5;
        }
        let x = Array::from_f32(&values, &[rows, n]).unwrap();
        let x_gpu = gpu(&x);
        for (temperature, top_k, top_p, min_p) in [
            (1.0, 0, 1.0, 0.0),
            (0.7, 50, 1.0, 0.0),
            (1.0, 0, 0.9, 0.0),
            (1.3, 40, 0.95, 0.05),
            (1.0, 1, 1.0, 0.0),
            (2.0, 0, 0.5, 0.0),
        ] {
            let settings = vec![
                SampleSettings {
                    temperature,
                    top_k,
                    top_p,
                    min_p
                };
                rows
            ];
            for counter in 0..24 {
                let draws: Vec<Draw> = (0..rows as u64)
                    .map(|r| Draw {
                        seed: 99 + r,
                        counter,
                    })
                    .collect();
                let want = ops::sample(&x, &settings, &draws).unwrap();
                let got = ops::sample(&x_gpu, &settings, &draws).unwrap();
                assert_eq!(
                    got.to_device(Device::Cpu).unwrap().as_i32().unwrap(),
                    want.as_i32().unwrap(),
                    "[{rows}, {n}] {:?} counter {counter}",
                    settings[0]
                );
            }
        }
    }
}

/// A captured graph replays its work on new inputs written in place, and its scratch
/// buffers stay its own: arrays made after capture never alias them.
#[test]
fn captured_graph_replays_on_new_inputs() {
    if !gpu_ready("captured_graph_replays_on_new_inputs") {
        return;
    }
    let dev = minerva_core::backends::cuda::device(0).unwrap();
    let mut rng = Rng(9);
    let w = gpu(&rng.array(&[37, 64]));
    let mut x = gpu(&rng.array(&[1, 64]));
    let mut ids = Array::zeros_on(DType::I32, &[1], GPU).unwrap();
    let table = gpu(&rng.array(&[11, 37]));
    // out = argmax(relu-ish(table[id] + w x)): an embedding lookup, a product, scratch.
    let step = |x: &Array, ids: &Array| -> minerva_core::Result<Array> {
        let h = ops::linear(x, &w, None)?;
        let e = ops::embedding(&table, ids)?;
        let s = ops::add(&h, &e)?;
        ops::argmax(&ops::mul(&s, &s)?)
    };
    let (graph, out) = dev.capture(|| step(&x, &ids)).unwrap();
    assert!(graph.nodes() >= 5, "{} nodes", graph.nodes());
    for round in 0..4 {
        let xv = rng.vec(64);
        let id = (round * 3 + 1) % 11;
        // Work queued between replays must not land in the graph's buffers.
        let noise = gpu(&rng.array(&[1, 37]));
        let fresh = Array::from_f32(&xv, &[1, 64]).unwrap();
        let xg = gpu(&fresh);
        ops::linear(&xg, &w, None).unwrap(); // reuse the pool's free buffers
        x.overwrite(&xg).unwrap();
        ids.overwrite(&Array::from_i32(&[id], &[1]).unwrap())
            .unwrap();
        graph.launch().unwrap();
        let eager = step(&xg, &gpu(&Array::from_i32(&[id], &[1]).unwrap())).unwrap();
        assert_eq!(
            out.to_device(Device::Cpu).unwrap().as_i32().unwrap(),
            eager.to_device(Device::Cpu).unwrap().as_i32().unwrap(),
            "replay {round}"
        );
        drop(noise);
    }
    // Copies from the host cannot be captured (the graph would replay a stale address).
    let err = dev
        .capture(|| rng.array(&[4]).to_device(GPU).map(|_| ()))
        .err()
        .expect("a capture that copies from the host fails")
        .to_string();
    assert!(err.contains("capturing a graph"), "{err}");
}

/// The bytes of a pool's codes and parameters, on the host.
fn pool_bytes(pages: &KvPages) -> Vec<u8> {
    let mut bytes = pages
        .codes()
        .to_device(Device::Cpu)
        .unwrap()
        .host_bytes()
        .unwrap()
        .to_vec();
    if let Some(p) = pages.params() {
        bytes.extend(p.to_device(Device::Cpu).unwrap().host_bytes().unwrap());
    }
    bytes
}

#[test]
fn paged_kv_writes_and_attention() {
    if !gpu_ready("paged_kv_writes_and_attention") {
        return;
    }
    let mut rng = Rng(7);
    let ps = 16;
    // (heads, kv_heads, head_dim, prompt, window, sinks, ring): two sequences share each pass,
    // on scattered pages; a ring table holds only the window plus a pass.
    let cases = [
        (64, 8, 64, 300usize, Some(128usize), true, false),
        (64, 8, 64, 100, Some(16), true, true),
        (64, 8, 64, 300, None, true, false),
        (9, 3, 64, 70, None, false, false),
        (4, 4, 128, 33, Some(8), false, false),
        (16, 1, 32, 20, None, true, false),
    ];
    for (heads, kv_heads, head_dim, prompt, window, with_sinks, ring) in cases {
        use KvDType::{Int4, Int8, F16, F32};
        // Keys and values alike, and int8 keys with int4 values.
        for (dtype, value_dtype) in [
            (F32, F32),
            (F16, F16),
            (Int8, Int8),
            (Int4, Int4),
            (Int8, Int4),
        ] {
            let capacity = prompt + 40;
            let width = match (ring, window) {
                (true, Some(w)) => (w + prompt - 1).div_ceil(ps),
                _ => capacity.div_ceil(ps),
            };
            let pages = 2 * width + 3;
            // Sequence 0 on odd pages from the top, sequence 1 on the rest, interleaved.
            let mut order: Vec<i32> = (0..pages as i32).rev().collect();
            order.rotate_left(3);
            let tables = Array::from_i32(&order[..2 * width], &[2, width]).unwrap();
            let pool = |dtype, device| {
                KvPages::zeros(dtype, pages, kv_heads, ps, head_dim, device).unwrap()
            };
            let (mut kc, mut vc, mut kg, mut vg) = (
                pool(dtype, Device::Cpu),
                pool(value_dtype, Device::Cpu),
                pool(dtype, GPU),
                pool(value_dtype, GPU),
            );
            let sinks = rng.array(&[heads]);
            let sinks_gpu = gpu(&sinks);
            let opts = |s| AttentionOptions {
                scale: 1.0 / (head_dim as f32).sqrt(),
                window,
                sinks: if with_sinks { Some(s) } else { None },
            };
            // Passes of (tokens of sequence 0, tokens of sequence 1): a prompt beside a short
            // chunk (tensor cores and split kernel in one call), a second chunk beside
            // another, then single tokens of both.
            let mut start = [0usize, 0];
            for runs in [[prompt, 3], [37, 20], [1, 1], [1, 1]] {
                let (mut pos, mut seq) = (Vec::new(), Vec::new());
                for (s, &n) in runs.iter().enumerate() {
                    pos.extend((start[s]..start[s] + n).map(|p| p as i32));
                    seq.extend(std::iter::repeat_n(s as i32, n));
                }
                let tokens = pos.len();
                let (pos, seq) = (
                    Array::from_i32(&pos, &[tokens]).unwrap(),
                    Array::from_i32(&seq, &[tokens]).unwrap(),
                );
                let (k, v) = (
                    rng.array(&[tokens, kv_heads, head_dim]),
                    rng.array(&[tokens, kv_heads, head_dim]),
                );
                let q = ops::scale(&rng.array(&[tokens, heads, head_dim]), 3.0).unwrap();
                let table = PageTable {
                    tables: &tables,
                    seq_of: &seq,
                    runs: &runs,
                };
                ops::write_kv_pages(&mut kc, table, &pos, &k).unwrap();
                ops::write_kv_pages(&mut vc, table, &pos, &v).unwrap();
                let cpu = ops::paged_attention(&q, &kc, &vc, table, &pos, opts(&sinks)).unwrap();
                let (tg, sg, pg) = (gpu(&tables), gpu(&seq), gpu(&pos));
                let table = PageTable {
                    tables: &tg,
                    seq_of: &sg,
                    runs: &runs,
                };
                ops::write_kv_pages(&mut kg, table, &pg, &gpu(&k)).unwrap();
                ops::write_kv_pages(&mut vg, table, &pg, &gpu(&v)).unwrap();
                let got =
                    ops::paged_attention(&gpu(&q), &kg, &vg, table, &pg, opts(&sinks_gpu)).unwrap();
                let tolerance = if dtype == F32 { 1e-4 } else { 2e-3 };
                let what = format!("attention {heads}/{kv_heads}x{head_dim} {dtype}/{value_dtype} window {window:?} ring {ring} runs {runs:?} at {start:?}");
                assert_close(&what, &got, &cpu, tolerance);
                start = [start[0] + runs[0], start[1] + runs[1]];
            }
            // The GPU quantizes exactly as the CPU does.
            assert!(
                pool_bytes(&kg) == pool_bytes(&kc),
                "{dtype}: written keys differ"
            );
            assert!(
                pool_bytes(&vg) == pool_bytes(&vc),
                "{value_dtype}: written values differ"
            );
            // A pool that grows keeps what it held.
            assert!(
                pool_bytes(&kg.grown(2 * pages).unwrap())
                    == pool_bytes(&kc.grown(2 * pages).unwrap())
            );
        }
    }
}

#[test]
fn device_errors_are_clear() {
    if !gpu_ready("device_errors_are_clear") {
        return;
    }
    let a = Array::from_f32(&[1.0, 2.0], &[2]).unwrap();
    let err = ops::add(&a, &gpu(&a)).unwrap_err().to_string();
    assert!(err.contains("cpu") && err.contains("cuda:0"), "{err}");
    let err = gpu(&a).as_f32().unwrap_err().to_string();
    assert!(err.contains("cuda:0"), "{err}");
    let err = minerva_core::backends::cuda::device(99)
        .err()
        .expect("no GPU 99")
        .to_string();
    assert!(err.contains("no CUDA device 99"), "{err}");
}

/// Compiled graphs on the GPU against the CPU's fused plans: bit for bit where every op is
/// correctly rounded on both and independent of order (`EXACT_UNARY`, + - * /, max, min,
/// row maxima; the kernels are built without fused multiply-adds), and within 2e-6
/// relative with exp, tanh, the sigmoids and row sums (CUDA's expf/tanhf are within 2 ulp,
/// 2.4e-7, of the correctly rounded value; a block sums a row in another order than the
/// CPU, a few roundings of 6e-8 on sums of like-signed terms; softmax and SiLU chains add a
/// few roundings each).
#[test]
fn compiled_graphs_match_the_cpu() {
    use minerva_core::graph::{self, Binary, Reduce, Unary};
    if !gpu_ready("compiled_graphs_match_the_cpu") {
        return;
    }
    let mut rng = random_graph::Rng(5);
    for case in 0..200 {
        let (g, outputs) =
            random_graph::random_graph(&mut rng, &random_graph::EXACT_UNARY, &[Reduce::Max]);
        let values = random_graph::input_values(&mut rng, &g);
        let plan = graph::compile(&g, &outputs);
        let inputs: Vec<Array> = g
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, graph::Op::Input(_)))
            .zip(&values)
            .map(|(n, v)| Array::from_f32(v, &n.shape).unwrap())
            .collect();
        let on_cpu: Vec<Vec<f32>> = graph::run(&plan, &inputs.iter().collect::<Vec<_>>())
            .unwrap()
            .iter()
            .map(|a| a.to_f32_vec().unwrap())
            .collect();
        let on_gpu_inputs: Vec<Array> = inputs.iter().map(gpu).collect();
        let on_gpu: Vec<Vec<f32>> = graph::run(&plan, &on_gpu_inputs.iter().collect::<Vec<_>>())
            .unwrap()
            .iter()
            .map(|a| a.to_f32_vec().unwrap())
            .collect();
        assert!(
            random_graph::same_bits(&on_cpu, &on_gpu),
            "case {case}:\n{plan}"
        );
    }
    // Softmax of an RMS-normed, SiLU-gated row: transcendental ops.
    let mut g = graph::Graph::new();
    let x = g.input(&[7, 96]);
    let w = g.input(&[96]);
    let normed = g.rms_norm(x, w, 1e-5).unwrap();
    let gate = g.unary(Unary::Silu, normed);
    let t = g.unary(Unary::Tanh, x);
    let h = g.binary(Binary::Mul, gate, t).unwrap();
    let m = g.reduce(Reduce::Max, h).unwrap();
    let shifted = g.binary(Binary::Sub, h, m).unwrap();
    let e = g.unary(Unary::Exp, shifted);
    let s = g.reduce(Reduce::Sum, e).unwrap();
    let p = g.binary(Binary::Div, e, s).unwrap();
    let plan = graph::compile(&g, &[p, normed]);
    let mut rng = Rng(6);
    let (xv, wv) = (rng.array(&[7, 96]), rng.array(&[96]));
    let want = graph::run(&plan, &[&xv, &wv]).unwrap();
    let got = graph::run(&plan, &[&gpu(&xv), &gpu(&wv)]).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_close("softmax(silu(rms_norm(x)) * tanh(x))", g, w, 2e-6);
    }
    // A residual sum and its norm, one row pass with two writes, on gpt-oss's width (8
    // warps a row, a width no multiple of the block).
    let mut g = graph::Graph::new();
    let x = g.input(&[5, 2880]);
    let y = g.input(&[5, 2880]);
    let w = g.input(&[2880]);
    let sum = g.binary(Binary::Add, x, y).unwrap();
    let normed = g.rms_norm(sum, w, 1e-5).unwrap();
    let plan = graph::compile(&g, &[sum, normed]);
    assert_eq!(plan.launches(), 1, "{plan}");
    let arrays = [
        rng.array(&[5, 2880]),
        rng.array(&[5, 2880]),
        rng.array(&[2880]),
    ];
    let want = graph::run(&plan, &arrays.iter().collect::<Vec<_>>()).unwrap();
    let on_gpu: Vec<Array> = arrays.iter().map(gpu).collect();
    let got = graph::run(&plan, &on_gpu.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(got[0].to_f32_vec().unwrap(), want[0].to_f32_vec().unwrap());
    assert_close("rms_norm(x + y)", &got[1], &want[1], 2e-6);
}

/// Products of one input recorded together (a layer's q, k and v) run in one launch where
/// their format takes the warp-per-row kernels: each gives the bits it gives alone, for one
/// token and a few, with and without a bias.
#[test]
fn products_of_one_input_give_their_bits_alone() {
    if !gpu_ready("products_of_one_input_give_their_bits_alone") {
        return;
    }
    let mut rng = Rng(9);
    let k = 576;
    for dtype in [DType::Q4_1, DType::Q8_0, DType::F16] {
        let weight = |rng: &mut Rng, n: usize| match dtype {
            DType::F16 => dense(&rng.vec(n * k), &[n, k], DType::F16),
            _ => gguf(rng, dtype, &[n, k]),
        };
        let (wq, wk, wv) = (
            weight(&mut rng, 576),
            weight(&mut rng, 192),
            weight(&mut rng, 70),
        );
        let bias = gpu(&rng.array(&[192]));
        let (wq, wk, wv) = (gpu(&wq), gpu(&wk), gpu(&wv));
        for tokens in [1, 3] {
            let x = gpu(&rng.array(&[tokens, k]));
            let step = || {
                let q = ops::linear(&x, &wq, None).unwrap();
                let k = ops::linear(&x, &wk, Some(&bias)).unwrap();
                let v = ops::linear(&x, &wv, None).unwrap();
                [q, k, v].map(|a| a.to_f32_vec().unwrap())
            };
            let alone = step();
            let (together, plans) =
                minerva_core::graph::traced(|| minerva_core::graph::lazily(step));
            assert!(plans[0].kernels[0].steps.len() == 3, "{}", plans[0]);
            assert_eq!(together, alone, "{dtype} x{tokens}");
        }
    }
}

/// A Llama block as the decoder records it, where the weights take the warp-per-row
/// kernels: each norm runs inside the products after it and SwiGLU inside gate and up (one
/// launch each), with the bits of every op run alone; for one token, a few, and more than
/// a tile of them.
#[test]
fn chained_norms_products_and_swiglu_give_their_bits_alone() {
    if !gpu_ready("chained_norms_products_and_swiglu_give_their_bits_alone") {
        return;
    }
    let mut rng = Rng(11);
    let (d, f) = (576, 1536);
    for dtype in [DType::Q4_1, DType::Q8_0, DType::F16] {
        let weight = |rng: &mut Rng, n: usize, k: usize| {
            gpu(&match dtype {
                DType::F16 => dense(&rng.vec(n * k), &[n, k], DType::F16),
                _ => gguf(rng, dtype, &[n, k]),
            })
        };
        let (wq, wk, wv) = (
            weight(&mut rng, d, d),
            weight(&mut rng, 192, d),
            weight(&mut rng, 192, d),
        );
        let (wg, wu, wd) = (
            weight(&mut rng, f, d),
            weight(&mut rng, f, d),
            weight(&mut rng, d, f),
        );
        let (bq, n1, n2) = (
            gpu(&rng.array(&[d])),
            gpu(&rng.array(&[d])),
            gpu(&rng.array(&[d])),
        );
        for tokens in [1, 3, 9] {
            let (x, attn, o) = (
                gpu(&rng.array(&[tokens, d])),
                gpu(&rng.array(&[tokens, d])),
                gpu(&rng.array(&[tokens, d])),
            );
            let step = || {
                let h = ops::add(&x, &attn).unwrap();
                let normed = ops::rms_norm(&h, &n1, 1e-5).unwrap();
                let q = ops::linear(&normed, &wq, Some(&bq)).unwrap();
                let k = ops::linear(&normed, &wk, None).unwrap();
                let v = ops::linear(&normed, &wv, None).unwrap();
                let h2 = ops::add(&h, &o).unwrap();
                let normed2 = ops::rms_norm(&h2, &n2, 1e-5).unwrap();
                let gate = ops::linear(&normed2, &wg, None).unwrap();
                let up = ops::linear(&normed2, &wu, None).unwrap();
                let act = ops::swiglu(&gate, &up).unwrap();
                let out = ops::add(&h2, &ops::linear(&act, &wd, None).unwrap()).unwrap();
                [h, q, k, v, h2, out].map(|a| a.to_f32_vec().unwrap())
            };
            let alone = step();
            let before = minerva_core::graph::lazy_stats().chained_launches;
            let together = minerva_core::graph::lazily(step);
            let chained = minerva_core::graph::lazy_stats().chained_launches - before;
            assert!(
                chained >= 2,
                "{dtype} x{tokens}: {chained} chained launches"
            );
            assert_eq!(together, alone, "{dtype} x{tokens}");
        }
    }
}
