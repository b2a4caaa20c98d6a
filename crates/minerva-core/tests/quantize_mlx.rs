//! `ops::quantize` against `mx.quantize` of mlx 0.32.4 (`tests/fixtures/mlx-quant`, made by
//! `scripts/fixtures/make_mlx_quant_fixtures.py`): every packed code word, scale and bias
//! must be the same bytes, for affine 2/3/4/5/6/8-bit x group 32/64/128 and MXFP4, from f32
//! and from bf16 input. Then quantize -> dequantize must land within half a step.

use std::path::PathBuf;

use minerva_core::{ops, Array, DType};
use safetensors::SafeTensors;

fn fixture() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mlx-quant/quant.safetensors");
    std::fs::read(path).unwrap()
}

fn input(st: &SafeTensors<'_>, name: &str, dtype: DType) -> Array {
    let t = st.tensor(name).unwrap();
    let mut a = Array::zeros(dtype, t.shape()).unwrap();
    a.host_bytes_mut().unwrap().copy_from_slice(t.data());
    a
}

/// Quantizes `w` as `dtype` and compares every output tensor of `prefix` byte for byte.
fn same_bytes(st: &SafeTensors<'_>, w: &Array, dtype: DType, prefix: &str) {
    let q = ops::quantize(w, dtype).unwrap();
    let params = q.quant().unwrap();
    let want = |part: &str| st.tensor(&format!("{prefix}.{part}")).unwrap();
    assert_eq!(
        q.host_bytes().unwrap(),
        want("weight").data(),
        "{prefix}.weight"
    );
    assert_eq!(
        params.scales.host_bytes().unwrap(),
        want("scales").data(),
        "{prefix}.scales"
    );
    assert_eq!(
        params.scales.shape(),
        want("scales").shape(),
        "{prefix}.scales"
    );
    match &params.biases {
        Some(b) => assert_eq!(
            b.host_bytes().unwrap(),
            want("biases").data(),
            "{prefix}.biases"
        ),
        None => assert!(st.tensor(&format!("{prefix}.biases")).is_err(), "{prefix}"),
    }
}

#[test]
fn quantize_matches_mlx_byte_for_byte() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let w = input(&st, "input.weight", DType::F32);
    let wb = input(&st, "input_bf16.weight", DType::BF16);
    let mut checked = 0;
    for bits in [2u8, 3, 4, 5, 6, 8] {
        for group in [32u16, 64, 128] {
            same_bytes(
                &st,
                &w,
                DType::Affine { bits, group },
                &format!("affine_b{bits}_g{group}"),
            );
            checked += 1;
        }
    }
    same_bytes(
        &st,
        &wb,
        DType::Affine { bits: 4, group: 64 },
        "affine_b4_g64_bf16",
    );
    same_bytes(&st, &w, DType::Mxfp4, "mxfp4");
    same_bytes(&st, &wb, DType::Mxfp4, "mxfp4_bf16");
    eprintln!("{} quantizations identical to mx.quantize", checked + 3);
}

/// Affine error is at most the group's plain step s = (max - min) / (2^bits - 1): mlx refits
/// the scale so that the edge of larger magnitude is a whole number of steps from zero, which
/// changes it to between s * n/(n+1) and s * n/(n-1) (n = 2^bits - 1), so rounding costs at
/// most |scale| / 2 <= 0.75 s and clamping the far edge at most s * n/(n+1). MXFP4 error is at
/// most half the gap between neighbouring e2m1 values (<= 1 at magnitude 6) times the scale.
#[test]
fn quantize_dequantize_round_trip() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let w = input(&st, "input.weight", DType::F32);
    let x = w.to_f32_vec().unwrap();
    for bits in [2u8, 3, 4, 5, 6, 8] {
        for group in [32usize, 64, 128] {
            let q = ops::quantize(
                &w,
                DType::Affine {
                    bits,
                    group: group as u16,
                },
            )
            .unwrap();
            let back = q.to_f32_vec().unwrap();
            let n_bins = ((1u32 << bits) - 1) as f32;
            for (g, (a, b)) in x.chunks(group).zip(back.chunks(group)).enumerate() {
                let (lo, hi) = a
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let bound = (hi - lo) / n_bins * 1.0001 + 1e-6;
                let err = a
                    .iter()
                    .zip(b)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    err <= bound,
                    "b{bits} g{group} group {g}: error {err} > {bound}"
                );
            }
        }
    }
    let q = ops::quantize(&w, DType::Mxfp4).unwrap();
    let back = q.to_f32_vec().unwrap();
    let scales = q.quant().unwrap().scales.host_bytes().unwrap().to_vec();
    for (i, (a, b)) in x.iter().zip(&back).enumerate() {
        let unit = 2f32.powi(scales[i / 32] as i32 - 127);
        assert!((a - b).abs() <= unit, "mxfp4 [{i}]: {a} vs {b}");
    }
}
