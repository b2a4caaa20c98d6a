//! The paged KV cache on the host: checking a pass's page tables against the pool, storing
//! rows, and attention over them.

use half::f16;

use super::attention::{self as cpu_attention, AttentionArgs};
use super::kv_rows::{KvRows, KvRowsMut};
use crate::ops::{shape_err, AttentionOptions, TableDims};
use crate::{Array, DType, KvDType, KvPages, PageTable, Result};

/// On the host, checks that every token's sequence exists and that the pages holding
/// positions `first(t)..=positions[t]` of it are in the pool; for attention (`ring`), also
/// that a sequence's span in this pass fits its table (a ring narrower than that would have
/// overwritten keys an earlier query of the pass still sees).
fn check_host_table(
    op: &str,
    table: PageTable<'_>,
    dims: &TableDims,
    positions: &[i32],
    pages: &KvPages,
    first: impl Fn(usize) -> usize,
) -> Result<()> {
    let (tables, seq_of) = (table.tables.as_i32()?, table.seq_of.as_i32()?);
    let ps = pages.page_size();
    let span = dims.width * ps;
    let mut t = 0;
    for &run in table.runs {
        let seq = seq_of[t];
        let lo = first(positions[t].max(0) as usize);
        for t in t..t + run {
            let (s, p) = (seq_of[t], positions[t]);
            if s != seq || s < 0 || s as usize >= dims.seqs || p < 0 {
                return shape_err(format!(
                    "{op}: token {t} of sequence {s} at position {p} in a run of sequence {seq} ({} sequences)",
                    dims.seqs
                ));
            }
            let pos = p as usize;
            if pos + 1 > lo + span {
                return shape_err(format!(
                    "{op}: sequence {s} spans positions {lo}..={pos}, more than its {} pages hold",
                    dims.width
                ));
            }
            for j in (first(pos) / ps)..=(pos / ps) {
                let page = tables[s as usize * dims.width + j % dims.width];
                if page < 0 || page as usize >= pages.pages() {
                    return shape_err(format!(
                        "{op}: sequence {s} position {pos} in page {page} of {}",
                        pages.pages()
                    ));
                }
            }
        }
        t += run;
    }
    Ok(())
}

fn host_rows(pages: &KvPages) -> Result<KvRows<'_>> {
    let codes = pages.codes();
    let params = || -> Result<&[f16]> {
        pages
            .params()
            .expect("integer pages have parameters")
            .as_f16()
    };
    Ok(match pages.dtype() {
        KvDType::F32 => KvRows::F32(codes.as_f32()?),
        KvDType::F16 => KvRows::F16(codes.as_f16()?),
        KvDType::Int8 => KvRows::Int8 {
            codes: codes.host_bytes()?,
            params: params()?,
        },
        KvDType::Int4 => KvRows::Int4 {
            codes: codes.host_bytes()?,
            params: params()?,
        },
    })
}

fn host_rows_mut(pages: &mut KvPages) -> Result<KvRowsMut<'_>> {
    let dtype = pages.dtype();
    let (codes, params) = pages.parts_mut();
    let params = params.map(Array::as_f16_mut).transpose()?;
    Ok(match (dtype, params) {
        (KvDType::F32, _) => KvRowsMut::F32(codes.as_f32_mut()?),
        (KvDType::F16, _) => KvRowsMut::F16(codes.as_f16_mut()?),
        (KvDType::Int8, Some(params)) => KvRowsMut::Int8 {
            codes: codes.host_bytes_mut()?,
            params,
        },
        (KvDType::Int4, Some(params)) => KvRowsMut::Int4 {
            codes: codes.host_bytes_mut()?,
            params,
        },
        _ => unreachable!("integer pages have parameters"),
    })
}

/// Stores `new` into `pages` (see [`crate::ops::write_kv_pages`]).
pub(crate) fn write_kv_pages(
    pages: &mut KvPages,
    table: PageTable<'_>,
    dims: &TableDims,
    positions: &Array,
    new: &Array,
) -> Result<()> {
    let (kv_heads, head_dim) = (pages.kv_heads(), pages.head_dim());
    let pos = positions.as_i32()?;
    check_host_table("write_kv_pages", table, dims, pos, pages, |p| p)?;
    let (tables, seq_of) = (table.tables.as_i32()?, table.seq_of.as_i32()?);
    let ps = pages.page_size();
    let src = new.as_f32()?;
    let mut rows = host_rows_mut(pages)?;
    for (t, (&s, &p)) in seq_of.iter().zip(pos).enumerate() {
        let (s, p) = (s as usize, p as usize);
        let page = tables[s * dims.width + (p / ps) % dims.width] as usize;
        for h in 0..kv_heads {
            let row = (page * kv_heads + h) * ps + p % ps;
            rows.store(row, &src[(t * kv_heads + h) * head_dim..][..head_dim]);
        }
    }
    Ok(())
}

/// Attention over the pages (see [`crate::ops::paged_attention`]).
pub(crate) fn paged_attention(
    q: &Array,
    k: &KvPages,
    v: &KvPages,
    table: PageTable<'_>,
    dims: &TableDims,
    positions: &Array,
    opts: AttentionOptions<'_>,
) -> Result<Array> {
    let [tokens, heads, head_dim] = *q.shape() else {
        unreachable!("checked by the op")
    };
    let kv_heads = k.kv_heads();
    let pos = positions.as_i32()?;
    let window = opts.window;
    let first = |p: usize| window.map_or(0, |w| (p + 1).saturating_sub(w));
    check_host_table("paged_attention", table, dims, pos, k, first)?;
    let args = AttentionArgs {
        k: host_rows(k)?,
        v: host_rows(v)?,
        kv_heads,
        page_size: k.page_size(),
        tables: table.tables.as_i32()?,
        width: dims.width,
        seq_of: table.seq_of.as_i32()?,
        runs: table.runs,
        positions: pos,
        window,
        sinks: opts.sinks.map(Array::as_f32).transpose()?,
        scale: opts.scale,
        half_products: k.dtype().half_products(),
    };
    let mut out = Array::zeros(DType::F32, &[tokens, heads * head_dim])?;
    cpu_attention::attention(q.as_f32()?, heads, head_dim, &args, out.as_f32_mut()?);
    Ok(out)
}
