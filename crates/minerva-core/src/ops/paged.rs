//! Ops on a paged KV cache ([`KvPages`] addressed through a [`PageTable`]): writing a pass's
//! keys and values, and attending over them.

use super::{expect_f32, shape_err, AttentionOptions};
use crate::backends;
use crate::{Array, DType, Error, KvPages, PageTable, Result};

/// The checked sizes of a pass's page tables, on any device.
pub(crate) struct TableDims {
    /// Sequences (rows of the tables).
    pub seqs: usize,
    /// Pages per sequence (columns).
    pub width: usize,
}

/// Checks the table's arrays against `tokens`.
fn table_dims(
    op: &str,
    table: PageTable<'_>,
    positions: &Array,
    tokens: usize,
) -> Result<TableDims> {
    let [seqs, width] = *table.tables.shape() else {
        return shape_err(format!("{op}: page tables {:?}", table.tables.shape()));
    };
    let bad = table.tables.dtype() != DType::I32
        || table.seq_of.dtype() != DType::I32
        || positions.dtype() != DType::I32
        || table.seq_of.shape() != [tokens]
        || positions.shape() != [tokens]
        || width == 0
        || table.runs.iter().sum::<usize>() != tokens;
    if bad {
        return shape_err(format!(
            "{op}: {tokens} tokens in runs {:?} with sequences {} {:?}, positions {} {:?}, tables {} {:?}",
            table.runs,
            table.seq_of.dtype(),
            table.seq_of.shape(),
            positions.dtype(),
            positions.shape(),
            table.tables.dtype(),
            table.tables.shape()
        ));
    }
    Ok(TableDims { seqs, width })
}

/// Writes `new` (`[tokens, kv_heads, head_dim]` f32) into `pages`, each token at its
/// position in its sequence (quantizing it for the integer dtypes).
pub fn write_kv_pages(
    pages: &mut KvPages,
    table: PageTable<'_>,
    positions: &Array,
    new: &Array,
) -> Result<()> {
    let (kv_heads, head_dim) = (pages.kv_heads(), pages.head_dim());
    let tokens = new.dim(0);
    if new.shape() != [tokens, kv_heads, head_dim] {
        return shape_err(format!(
            "write_kv_pages: {:?} into pages of {kv_heads} heads x {head_dim}",
            new.shape()
        ));
    }
    let dims = table_dims("write_kv_pages", table, positions, tokens)?;
    expect_f32("write_kv_pages", new)?;
    backends::backend_of(
        "write_kv_pages",
        &[pages.codes(), table.tables, table.seq_of, positions, new],
    )?
    .write_kv_pages(pages, table, &dims, positions, new)
}

/// Causal grouped-query attention of `q` (`[tokens, heads, head_dim]` f32, each token at its
/// position in its sequence) over the keys `k` and values `v` of its sequence, written
/// there already (this pass's too). Returns `[tokens, heads * head_dim]` f32.
pub fn paged_attention(
    q: &Array,
    k: &KvPages,
    v: &KvPages,
    table: PageTable<'_>,
    positions: &Array,
    opts: AttentionOptions<'_>,
) -> Result<Array> {
    let [tokens, heads, head_dim] = *q.shape() else {
        return shape_err(format!("paged_attention: q {:?}", q.shape()));
    };
    let kv_heads = k.kv_heads();
    let same = |a: &KvPages| (a.pages(), a.kv_heads(), a.page_size(), a.head_dim());
    if same(k) != same(v) || k.head_dim() != head_dim || heads % kv_heads != 0 {
        return shape_err(format!(
            "paged_attention: q {:?} over {} pages of {kv_heads} heads x {} (keys) / {} (values)",
            q.shape(),
            k.pages(),
            k.head_dim(),
            v.head_dim()
        ));
    }
    // Keys and values may be stored differently (int8 keys with int4 values: see
    // `kv_pages`), as long as both products round to f16 or neither does.
    if k.dtype().half_products() != v.dtype().half_products() {
        return Err(Error::Unsupported(format!(
            "paged attention over {} keys and {} values",
            k.dtype(),
            v.dtype()
        )));
    }
    if let Some(s) = opts.sinks.filter(|s| s.shape() != [heads]) {
        return shape_err(format!(
            "paged_attention: sinks {:?} for {heads} heads",
            s.shape()
        ));
    }
    let dims = table_dims("paged_attention", table, positions, tokens)?;
    expect_f32("paged_attention", q)?;
    let mut args = vec![
        q,
        k.codes(),
        v.codes(),
        table.tables,
        table.seq_of,
        positions,
    ];
    args.extend(opts.sinks);
    // Positions and tables on a device were made by the engine for this pass; its kernels
    // clamp them into the pool instead of reading them back here.
    backends::backend_of("paged_attention", &args)?
        .paged_attention(q, k, v, table, &dims, positions, opts)
}

/// Copies all of `src` into the start of `dst` (same dtype and trailing axes, `dst` at least
/// as long): how a pool of pages grows.
pub(crate) fn copy_prefix(src: &Array, dst: &mut Array) -> Result<()> {
    if src.dtype() != dst.dtype()
        || src.shape().get(1..) != dst.shape().get(1..)
        || src.shape().first() > dst.shape().first()
    {
        return shape_err(format!(
            "copy_prefix: {} {:?} into {} {:?}",
            src.dtype(),
            src.shape(),
            dst.dtype(),
            dst.shape()
        ));
    }
    backends::backend_of("copy_prefix", &[src, dst])?.copy_prefix(src, dst, src.nbytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvDType;

    fn arr(v: &[f32], shape: &[usize]) -> Array {
        Array::from_f32(v, shape).unwrap()
    }

    fn ids(v: &[i32]) -> Array {
        Array::from_i32(v, &[v.len()]).unwrap()
    }

    fn pages(dtype: KvDType, pages: usize, kv_heads: usize, ps: usize, d: usize) -> KvPages {
        KvPages::zeros(dtype, pages, kv_heads, ps, d, crate::Device::Cpu).unwrap()
    }

    fn pool(dtype: KvDType, n: usize, kv_heads: usize, ps: usize, d: usize) -> [KvPages; 2] {
        [0, 1].map(|_| pages(dtype, n, kv_heads, ps, d))
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.731).sin()).collect()
    }

    #[test]
    fn attention_matches_naive_softmax() {
        // One head, one KV head, head_dim 2, three positions in pages of 2 (the second page
        // is page 0), query at position 2.
        let [mut k, mut v] = pool(KvDType::F16, 3, 1, 2, 2);
        let tables = Array::from_i32(&[2, 0], &[1, 2]).unwrap();
        let seq = ids(&[0, 0, 0]);
        let table = PageTable {
            tables: &tables,
            seq_of: &seq,
            runs: &[3],
        };
        let at = ids(&[0, 1, 2]);
        let kv = |v: &[f32]| arr(v, &[3, 1, 2]);
        write_kv_pages(&mut k, table, &at, &kv(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0])).unwrap();
        write_kv_pages(&mut v, table, &at, &kv(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        let q = arr(&[1.0, 2.0], &[1, 1, 2]);
        let (one, pos) = (ids(&[0]), ids(&[2]));
        let table = PageTable {
            tables: &tables,
            seq_of: &one,
            runs: &[1],
        };
        let opts = AttentionOptions {
            scale: 1.0,
            window: None,
            sinks: None,
        };
        let y = paged_attention(&q, &k, &v, table, &pos, opts).unwrap();
        let s = [1.0f32, 2.0, 3.0].map(f32::exp);
        let z: f32 = s.iter().sum();
        let want0 = (s[0] * 1.0 + s[1] * 3.0 + s[2] * 5.0) / z;
        // With an f16 cache the probabilities are rounded to f16 (relative 2^-11 each).
        assert!((y.as_f32().unwrap()[0] - want0).abs() < 5.0 * want0 / 2048.0);
        // A window of 1 sees only the query's own position.
        let windowed = AttentionOptions {
            window: Some(1),
            ..opts
        };
        let y = paged_attention(&q, &k, &v, table, &pos, windowed).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[5.0, 6.0]);
        // A sink adds mass to the denominator only.
        let sinks = arr(&[3.0], &[1]);
        let sunk = AttentionOptions {
            sinks: Some(&sinks),
            ..windowed
        };
        let y = paged_attention(&q, &k, &v, table, &pos, sunk).unwrap();
        let p = 3.0f32.exp() / (3.0f32.exp() * 2.0);
        assert!((y.as_f32().unwrap()[0] - 5.0 * p).abs() < 1e-5);
        // A position past the pages the table holds is an error, not a wrap.
        assert!(paged_attention(&q, &k, &v, table, &ids(&[4]), opts).is_err());
    }

    /// Runs `lens[s]` tokens of each sequence (values seeded by `seeds[s]`, from position 0)
    /// through pools laid out by `tables` (`[seqs, width]`), then attends queries at each
    /// sequence's last `tail` positions; returns the outputs per sequence.
    fn run_batch(
        (key_dtype, value_dtype): (KvDType, KvDType),
        tables: &[i32],
        width: usize,
        (lens, seeds): (&[usize], &[f32]),
        tail: usize,
        window: Option<usize>,
    ) -> Vec<Vec<f32>> {
        let (heads, kv_heads, d, ps) = (4, 2, 8, 4);
        let mut k = pages(key_dtype, 16, kv_heads, ps, d);
        let mut v = pages(value_dtype, 16, kv_heads, ps, d);
        let tables = Array::from_i32(tables, &[lens.len(), width]).unwrap();
        let sinks = arr(&[0.5, -1.0, 0.0, 2.0], &[heads]);
        let opts = AttentionOptions {
            scale: 0.4,
            window,
            sinks: Some(&sinks),
        };
        let mut outs = vec![Vec::new(); lens.len()];
        // Prefill everything but the tail in chunks of 3 per sequence, then the tail one
        // token per pass, all sequences together in each pass (as continuous batching does).
        let mut done = vec![0usize; lens.len()];
        while done.iter().zip(lens).any(|(d, l)| d < l) {
            let (mut seq_of, mut pos, mut runs) = (Vec::new(), Vec::new(), Vec::new());
            for (s, (&len, at)) in lens.iter().zip(&mut done).enumerate() {
                let step = if *at + tail < len {
                    3.min(len - tail - *at)
                } else {
                    1
                };
                let end = (*at + step).min(len);
                for p in *at..end {
                    seq_of.push(s as i32);
                    pos.push(p as i32);
                }
                if end > *at {
                    runs.push(end - *at);
                }
                *at = end;
            }
            if seq_of.is_empty() {
                break;
            }
            let n = seq_of.len();
            let (seq, at) = (ids(&seq_of), ids(&pos));
            let table = PageTable {
                tables: &tables,
                seq_of: &seq,
                runs: &runs,
            };
            // Each (sequence, position) has its own values, whatever pass it lands in.
            let row = |salt: f32| -> Vec<f32> {
                seq_of
                    .iter()
                    .zip(&pos)
                    .flat_map(|(&s, &p)| {
                        values(kv_heads * d, salt + 100.0 * seeds[s as usize] + p as f32)
                    })
                    .collect()
            };
            write_kv_pages(&mut k, table, &at, &arr(&row(0.0), &[n, kv_heads, d])).unwrap();
            write_kv_pages(&mut v, table, &at, &arr(&row(0.5), &[n, kv_heads, d])).unwrap();
            let q: Vec<f32> = seq_of
                .iter()
                .zip(&pos)
                .flat_map(|(&s, &p)| values(heads * d, 7.0 + 100.0 * seeds[s as usize] + p as f32))
                .collect();
            let y = paged_attention(&arr(&q, &[n, heads, d]), &k, &v, table, &at, opts).unwrap();
            for (i, out) in y.as_f32().unwrap().chunks_exact(heads * d).enumerate() {
                let s = seq_of[i] as usize;
                if pos[i] as usize + tail >= lens[s] {
                    outs[s].extend_from_slice(out);
                }
            }
        }
        outs
    }

    #[test]
    fn a_sequence_attends_the_same_alone_or_in_a_batch_and_on_any_pages() {
        use KvDType::{Int4, Int8, F16, F32};
        for dtypes in [
            (F32, F32),
            (F16, F16),
            (Int8, Int8),
            (Int4, Int4),
            (Int8, Int4),
        ] {
            // Alone, on pages 0, 1, 2, ...
            let alone = run_batch(dtypes, &[0, 1, 2, 3], 4, (&[13], &[1.0]), 3, None);
            // Beside two others, on scattered pages.
            let batch = run_batch(
                dtypes,
                &[9, 2, 14, 5, 0, 1, 3, 4, 6, 7, 8, 10],
                4,
                (&[11, 13, 6], &[0.0, 1.0, 2.0]),
                3,
                None,
            );
            assert_eq!(batch[1], alone[0], "{dtypes:?}");
        }
    }

    #[test]
    fn a_ring_of_pages_serves_a_sliding_window() {
        // Window 5 over 13 positions: a ring of 3 pages of 4 (12 >= 5 + 3 - 1 positions in a
        // pass) gives the same as the full table.
        let f32s = (KvDType::F32, KvDType::F32);
        let full = run_batch(f32s, &[0, 1, 2, 3], 4, (&[13], &[1.0]), 3, Some(5));
        let ring = run_batch(f32s, &[7, 3, 11], 3, (&[13], &[1.0]), 3, Some(5));
        assert_eq!(ring, full);
        // Without a window the ring is too small, and that is an error.
        let [k, v] = pool(KvDType::F32, 4, 1, 4, 2);
        assert!(attend_one(&k, &v, &[0, 1], 9).is_err());
    }

    /// One query of one head (dimension 2) at `position` over pages `table`, no window.
    fn attend_one(k: &KvPages, v: &KvPages, table: &[i32], position: i32) -> Result<Array> {
        let tables = Array::from_i32(table, &[1, table.len()]).unwrap();
        let seq = ids(&[0]);
        let table = PageTable {
            tables: &tables,
            seq_of: &seq,
            runs: &[1],
        };
        let opts = AttentionOptions {
            scale: 1.0,
            window: None,
            sinks: None,
        };
        let q = arr(&[0.0; 2], &[1, 1, 2]);
        paged_attention(&q, k, v, table, &ids(&[position]), opts)
    }

    #[test]
    fn quantized_caches_stay_close_to_f16() {
        use KvDType::{Int4, Int8, F16};
        let f16s = run_batch((F16, F16), &[0, 1, 2, 3], 4, (&[13], &[1.0]), 3, None);
        // int8 keys with int4 values: the values' 4-bit step is what is left.
        let cases = [
            ((Int8, Int8), 0.02),
            ((Int4, Int4), 0.2),
            ((Int8, Int4), 0.2),
        ];
        for (dtypes, bound) in cases {
            let q = run_batch(dtypes, &[0, 1, 2, 3], 4, (&[13], &[1.0]), 3, None);
            let err = q[0]
                .iter()
                .zip(&f16s[0])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let scale = f16s[0].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(err <= bound * scale, "{dtypes:?}: {err} of {scale}");
            assert!(err > 0.0, "{dtypes:?} quantizes");
        }
    }

    #[test]
    fn keys_and_values_round_their_products_alike() {
        let (k, v) = (
            pages(KvDType::F32, 1, 1, 2, 2),
            pages(KvDType::F16, 1, 1, 2, 2),
        );
        assert!(attend_one(&k, &v, &[0], 0).is_err());
        // The same call over storage that rounds alike runs.
        let k = pages(KvDType::Int8, 1, 1, 2, 2);
        assert!(attend_one(&k, &v, &[0], 0).is_ok());
    }
}
