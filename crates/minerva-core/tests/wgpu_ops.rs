//! The wgpu backend's ops against the CPU backend on random inputs (odd sizes included),
//! on the first adapter wgpu finds: in CI, Mesa's lavapipe (scripts/install-lavapipe).
//! Skips, with a message, where wgpu finds no adapter.
//!
//! Tolerance: max |wgpu - cpu| / max |cpu| ≤ 1e-6 for ops that move values or pick them
//! (embedding of every table format, layout, argmax, routing ids), where both sides do the
//! same f32 arithmetic or none; 1e-5 for RoPE (the GPU's sin and cos, and fused
//! multiply-adds, differ from the host's in the last bits) and the routing weights and
//! expert mixing (exp, and sums a driver may contract into fused multiply-adds).

#[path = "common/fixtures.rs"]
#[allow(dead_code)] // the products' helpers
mod fixtures;

use fixtures::{dense, gguf, relative_error, Rng};
use minerva_core::ops::{self, Rope, RopeStyle};
use minerva_core::{Array, DType, Device};

const ADAPTER: Device = Device::Wgpu(0);

fn adapter_ready(test: &str) -> bool {
    match minerva_core::backends::wgpu::device(0) {
        Ok(dev) => {
            eprintln!("{test}: on {}", dev.name());
            true
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no wgpu adapter ({e})");
            false
        }
    }
}

fn on_adapter(a: &Array) -> Array {
    a.to_device(ADAPTER).unwrap()
}

fn assert_close(what: &str, got: &Array, want: &Array, tolerance: f32) {
    assert_eq!(got.device(), ADAPTER, "{what}: computed on the adapter");
    let err = relative_error(&got.to_device(Device::Cpu).unwrap(), want);
    assert!(
        err <= tolerance,
        "{what}: relative error {err:e} > {tolerance:e}"
    );
}

fn ids(values: &[i32]) -> Array {
    Array::from_i32(values, &[values.len()]).unwrap()
}

#[test]
fn arrays_go_to_the_adapter_and_back_unchanged() {
    if !adapter_ready("arrays_go_to_the_adapter_and_back_unchanged") {
        return;
    }
    let mut rng = Rng(7);
    // Odd byte lengths and a view at an odd byte offset.
    for len in [1usize, 3, 5, 1023] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut a = Array::zeros(DType::U8, &[len]).unwrap();
        a.host_bytes_mut().unwrap().copy_from_slice(&bytes);
        let back = on_adapter(&a).to_device(Device::Cpu).unwrap();
        assert_eq!(back.host_bytes().unwrap(), &bytes[..], "{len} bytes");
        let view = on_adapter(&a).narrow(len / 3, len - len / 3).unwrap();
        let back = view.to_device(Device::Cpu).unwrap();
        assert_eq!(
            back.host_bytes().unwrap(),
            &bytes[len / 3..],
            "a view of {len}"
        );
    }
    let zeros = Array::zeros_on(DType::F32, &[3, 5], ADAPTER).unwrap();
    assert_eq!(zeros.to_f32_vec().unwrap(), vec![0.0; 15]);
}

#[test]
fn embedding_reads_every_table_format() {
    if !adapter_ready("embedding_reads_every_table_format") {
        return;
    }
    let mut rng = Rng(3);
    let (vocab, d) = (37, 96);
    let values = rng.vec(vocab * d);
    let tables = [
        ("f32", dense(&values, &[vocab, d], DType::F32)),
        ("f16", dense(&values, &[vocab, d], DType::F16)),
        ("bf16", dense(&values, &[vocab, d], DType::BF16)),
        ("q4_0", gguf(&mut rng, DType::Q4_0, &[vocab, d])),
        ("q4_1", gguf(&mut rng, DType::Q4_1, &[vocab, d])),
        ("q8_0", gguf(&mut rng, DType::Q8_0, &[vocab, d])),
    ];
    let tokens = ids(&[0, 36, 5, 5, 17]);
    for (name, table) in &tables {
        let want = ops::embedding(table, &tokens).unwrap();
        // Ids from the host, and ids already on the adapter.
        let got = ops::embedding(&on_adapter(table), &tokens).unwrap();
        assert_close(name, &got, &want, 1e-6);
        let got = ops::embedding(&on_adapter(table), &on_adapter(&tokens)).unwrap();
        assert_close(name, &got, &want, 1e-6);
    }
    let bad = ops::embedding(&on_adapter(&tables[0].1), &ids(&[37]));
    assert!(bad.is_err(), "a host id outside the vocabulary is refused");
}

#[test]
fn rope_rotates_like_the_cpu() {
    if !adapter_ready("rope_rotates_like_the_cpu") {
        return;
    }
    let mut rng = Rng(5);
    let (tokens, heads, head_dim) = (3, 5, 64);
    let x = rng.array(&[tokens, heads, head_dim]);
    let positions = ids(&[0, 7, 4095]);
    for (style, pairs) in [
        (RopeStyle::Interleaved, 32),
        (RopeStyle::Half, 32),
        (RopeStyle::Half, 24),
    ] {
        let rope = Rope {
            inv_freq: (0..pairs)
                .map(|i| 10000f32.powf(-(i as f32) / pairs as f32))
                .collect(),
            style,
            mscale: 1.1,
        };
        let want = ops::rope(&x, &positions, &rope).unwrap();
        let got = ops::rope(&on_adapter(&x), &on_adapter(&positions), &rope).unwrap();
        assert_close(&format!("{style:?} with {pairs} pairs"), &got, &want, 1e-5);
    }
}

#[test]
fn argmax_routing_and_mixing_match_the_cpu() {
    if !adapter_ready("argmax_routing_and_mixing_match_the_cpu") {
        return;
    }
    let mut rng = Rng(11);
    // Rows longer than a workgroup, with ties resolved to the lower index.
    let mut logits = rng.vec(3 * 1000);
    logits[1000 + 17] = 5.0;
    logits[1000 + 900] = 5.0;
    let x = Array::from_f32(&logits, &[3, 1000]).unwrap();
    let got = ops::argmax(&on_adapter(&x))
        .unwrap()
        .to_device(Device::Cpu)
        .unwrap();
    assert_eq!(
        got.as_i32().unwrap(),
        ops::argmax(&x).unwrap().as_i32().unwrap()
    );
    assert_eq!(got.as_i32().unwrap()[1], 17);

    let scores = rng.array(&[7, 32]);
    let (want_ids, want_w) = ops::top_k_softmax(&scores, 4).unwrap();
    let (ids_got, w_got) = ops::top_k_softmax(&on_adapter(&scores), 4).unwrap();
    let ids_got = ids_got.to_device(Device::Cpu).unwrap();
    assert_eq!(ids_got.as_i32().unwrap(), want_ids.as_i32().unwrap());
    assert_close("routing weights", &w_got, &want_w, 1e-5);

    let y = rng.array(&[7, 4, 45]);
    let want = ops::weighted_sum(&y, &want_w).unwrap();
    let got = ops::weighted_sum(&on_adapter(&y), &on_adapter(&want_w)).unwrap();
    assert_close("weighted sum", &got, &want, 1e-5);
}

#[test]
fn layout_ops_and_copies_match_the_cpu() {
    if !adapter_ready("layout_ops_and_copies_match_the_cpu") {
        return;
    }
    let mut rng = Rng(13);
    let x = rng.array(&[3, 5, 14]);
    let (even, odd) = ops::deinterleave(&x).unwrap();
    let (even_got, odd_got) = ops::deinterleave(&on_adapter(&x)).unwrap();
    assert_close("even", &even_got, &even, 0.0);
    assert_close("odd", &odd_got, &odd, 0.0);
    let want = ops::transpose_last2(&x).unwrap();
    assert_close(
        "transpose",
        &ops::transpose_last2(&on_adapter(&x)).unwrap(),
        &want,
        0.0,
    );
    // A view (rows 1..3) as the source.
    let view = on_adapter(&x).narrow(1, 2).unwrap();
    let want = ops::transpose_last2(&x.narrow(1, 2).unwrap()).unwrap();
    assert_close(
        "transpose of a view",
        &ops::transpose_last2(&view).unwrap(),
        &want,
        0.0,
    );
}

#[test]
fn ops_the_backend_lacks_say_so() {
    if !adapter_ready("ops_the_backend_lacks_say_so") {
        return;
    }
    let x = on_adapter(&Array::from_f32(&[1.0, 2.0], &[1, 2]).unwrap());
    let err = ops::linear(&x, &x, None)
        .and_then(|y| y.to_device(Device::Cpu))
        .unwrap_err();
    assert!(
        err.to_string().contains("on wgpu (not written yet"),
        "{err}"
    );
}
