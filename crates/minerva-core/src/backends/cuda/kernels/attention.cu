// Causal grouped-query attention over a paged KV cache (see kv_pages.rs for the layout:
// rows indexed (page * kv_heads + head) * page_size + slot, stored as f32, f16, int8 with an
// f16 scale, or int4 with an f16 scale and minimum), split over the keys (flash-decoding):
// each block takes one query token, one KV head with all the query heads that share it, and
// one slice of the visible keys, and leaves a partial (max, sum, weighted values); a second
// kernel merges the slices and the sink logits. Everything that varies per step (positions,
// page tables, hence the visible range) is read on the device, so a captured graph replays
// unchanged.

#define ATTN_WARPS 4
#define ATTN_BATCH 4  // keys per warp whose rows are loaded together

// Storage kinds, as KvDType orders them.
#define KV_F32 0
#define KV_F16 1
#define KV_Q8 2
#define KV_Q4 3

// The row of a sequence's position j for KV head h; page ids are clamped into the pool.
__device__ __forceinline__ i64 kv_row(const int* __restrict__ tables, int seq, int width, int j,
                                      int page_size, int kv_heads, int h, int pages) {
    int page = tables[(i64)seq * width + (j / page_size) % width];
    page = min(max(page, 0), pages - 1);
    return ((i64)page * kv_heads + h) * page_size + j % page_size;
}

__device__ __forceinline__ float round_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

// Value d of row `row` as attention multiplies it: integer codes dequantized (no fused
// multiply-add, so the CPU computes the same) and rounded to f16.
template <int KIND>
__device__ __forceinline__ float kv_value(const void* codes, const u16* params, i64 row, int d,
                                          int head_dim) {
    if (KIND == KV_F32) return ((const float*)codes)[row * head_dim + d];
    if (KIND == KV_F16) return f16_to_f32(((const u16*)codes)[row * head_dim + d]);
    if (KIND == KV_Q8) {
        const float q = (float)((const signed char*)codes)[row * head_dim + d];
        return round_f16(__fmul_rn(q, f16_to_f32(params[row])));
    }
    const u8 b = ((const u8*)codes)[row * (head_dim / 2) + d / 2];
    const float q = (float)((b >> (4 * (d & 1))) & 15);
    return round_f16(__fadd_rn(__fmul_rn(q, f16_to_f32(params[2 * row])),
                               f16_to_f32(params[2 * row + 1])));
}

// The lane's dimensions (lane, lane + 32, ...) of row `row` (0 past head_dim).
template <int D, int KIND>
__device__ __forceinline__ void load_kv_row(const void* codes, const u16* params, i64 row,
                                            int lane, int head_dim, float* out) {
#pragma unroll
    for (int d = 0; d < D; d++) {
        const int dim = lane + 32 * d;
        out[d] = dim >= head_dim ? 0.0f : kv_value<KIND>(codes, params, row, dim, head_dim);
    }
}

// Writes new keys or values `[tokens, kv_heads, head_dim]` (f32) into pages, each token at its
// position in its sequence; one warp per (token, head) row. Integer kinds quantize the row as
// kv_rows.rs does (same steps, same rounding, so the same bytes).
extern "C" __global__ void write_kv_pages(void* codes, u16* params, const float* src,
                                          const int* positions, const int* seq_of,
                                          const int* tables, int tokens, int kv_heads,
                                          int page_size, int width, int pages, int head_dim,
                                          int kind) {
    const i64 r = blockIdx.x * (i64)(blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= (i64)tokens * kv_heads) return;
    const int t = r / kv_heads, h = r % kv_heads, p = positions[t];
    if (p < 0) return;  // never written outside the sequence
    const i64 row = kv_row(tables, seq_of[t], width, p, page_size, kv_heads, h, pages);
    const float* x = src + r * head_dim;
    if (kind == KV_F32) {
        for (int d = lane; d < head_dim; d += 32) ((float*)codes)[row * head_dim + d] = x[d];
    } else if (kind == KV_F16) {
        for (int d = lane; d < head_dim; d += 32)
            ((u16*)codes)[row * head_dim + d] = f32_to_f16(x[d]);
    } else if (kind == KV_Q8) {
        float amax = 0.0f;
        for (int d = lane; d < head_dim; d += 32) amax = fmaxf(amax, fabsf(x[d]));
        const u16 sh = f32_to_f16(__fdiv_rn(warp_max(amax), 127.0f));
        const float s = f16_to_f32(sh);
        if (lane == 0) params[row] = sh;
        for (int d = lane; d < head_dim; d += 32) {
            const float q = s == 0.0f ? 0.0f : fminf(fmaxf(rintf(__fdiv_rn(x[d], s)), -127.0f), 127.0f);
            ((signed char*)codes)[row * head_dim + d] = (signed char)q;
        }
    } else {
        float lo = INFINITY, hi = -INFINITY;
        for (int d = lane; d < head_dim; d += 32) {
            lo = fminf(lo, x[d]);
            hi = fmaxf(hi, x[d]);
        }
        lo = -warp_max(-lo);
        hi = warp_max(hi);
        const u16 sh = f32_to_f16(__fdiv_rn(__fsub_rn(hi, lo), 15.0f)), mh = f32_to_f16(lo);
        const float s = f16_to_f32(sh), m = f16_to_f32(mh);
        if (lane == 0) {
            params[2 * row] = sh;
            params[2 * row + 1] = mh;
        }
        for (int i = lane; i < head_dim / 2; i += 32) {
            u32 byte = 0;
            for (int e = 0; e < 2; e++) {
                const float q = s == 0.0f ? 0.0f
                                          : fminf(fmaxf(rintf(__fdiv_rn(__fsub_rn(x[2 * i + e], m), s)), 0.0f), 15.0f);
                byte |= ((u32)q) << (4 * e);
            }
            ((u8*)codes)[row * (head_dim / 2) + i] = (u8)byte;
        }
    }
}

// KK and VK: how keys and values are stored (int8 keys with int4 values, or both alike).
template <int D, int GMAX, int KK, int VK>
__device__ __forceinline__ void attn_partial_body(
    const float* __restrict__ q, const void* kc, const u16* kp, const void* vc, const u16* vp,
    const int* __restrict__ positions, const int* __restrict__ seq_of,
    const int* __restrict__ tables, float* __restrict__ part_acc, float* __restrict__ part_ml,
    int heads, int kv_heads, int page_size, int width, int pages, int head_dim, int window,
    float scale) {
    // Lane `l` holds dimensions l, l + 32, ... below head_dim (at most 32 D of them).
    const int HD = head_dim;
    __shared__ float sm_m[ATTN_WARPS][GMAX];
    __shared__ float sm_l[ATTN_WARPS][GMAX];
    __shared__ float sm_acc[ATTN_WARPS][GMAX][32 * D];
    const int split = blockIdx.x, splits = gridDim.x, h = blockIdx.y, t = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int G = heads / kv_heads;
    const int p = max(positions[t], 0), seq = seq_of[t];
    const int lo = window > 0 ? max(0, p - window + 1) : 0;
    const int chunk = (p + 1 - lo + splits - 1) / splits;
    const int start = lo + split * chunk, end = min(p + 1, start + chunk);
    constexpr bool HALF = KK != KV_F32;  // the host checks that VK agrees

    float qr[GMAX][D], acc[GMAX][D], m[GMAX], l[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int d = 0; d < D; d++) {
            acc[g][d] = 0.0f;
            // Over anything but an f32 cache the queries are rounded to f16 as well (as the
            // CPU backend and llama.cpp do), so each product has two f16 operands.
            const bool in = g < G && lane + 32 * d < HD;
            const float qv = in ? q[((i64)t * heads + h * G + g) * HD + lane + 32 * d] : 0.0f;
            qr[g][d] = HALF ? round_f16(qv) : qv;
        }
    }
    // Each warp takes ATTN_BATCH keys at a time and loads all their K and V rows before using
    // any: one memory round trip per batch instead of two per key.
    for (int j0 = start + warp * ATTN_BATCH; j0 < end; j0 += ATTN_WARPS * ATTN_BATCH) {
        float kr[ATTN_BATCH][D], vr[ATTN_BATCH][D];
#pragma unroll
        for (int b = 0; b < ATTN_BATCH; b++) {
            const int j = min(j0 + b, end - 1);  // past `end`: not used
            const i64 row = kv_row(tables, seq, width, j, page_size, kv_heads, h, pages);
            load_kv_row<D, KK>(kc, kp, row, lane, HD, kr[b]);
            load_kv_row<D, VK>(vc, vp, row, lane, HD, vr[b]);
        }
#pragma unroll
        for (int b = 0; b < ATTN_BATCH; b++) {
            if (j0 + b >= end) break;
            float sc[GMAX];
#pragma unroll
            for (int g = 0; g < GMAX; g++) {
                if (g < G) {
                    float s = 0.0f;
#pragma unroll
                    for (int d = 0; d < D; d++) s = fmaf(qr[g][d], kr[b][d], s);
                    sc[g] = warp_sum(s) * scale;
                }
            }
#pragma unroll
            for (int g = 0; g < GMAX; g++) {
                if (g < G) {
                    const float mn = fmaxf(m[g], sc[g]);
                    const float corr = expf(m[g] - mn), pe = expf(sc[g] - mn);
                    l[g] = l[g] * corr + pe;
#pragma unroll
                    for (int d = 0; d < D; d++) acc[g][d] = fmaf(acc[g][d], corr, pe * vr[b][d]);
                    m[g] = mn;
                }
            }
        }
    }
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        if (g < G) {
            if (lane == 0) {
                sm_m[warp][g] = m[g];
                sm_l[warp][g] = l[g];
            }
#pragma unroll
            for (int d = 0; d < D; d++) sm_acc[warp][g][lane + 32 * d] = acc[g][d];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
        const int g = i / HD, d = i % HD;
        float mx = -INFINITY;
        for (int w = 0; w < ATTN_WARPS; w++) mx = fmaxf(mx, sm_m[w][g]);
        float ls = 0.0f, a = 0.0f;
        if (mx != -INFINITY) {
            for (int w = 0; w < ATTN_WARPS; w++) {
                const float f = expf(sm_m[w][g] - mx);
                ls += sm_l[w][g] * f;
                a += sm_acc[w][g][d] * f;
            }
        }
        const i64 row = ((i64)t * heads + h * G + g) * splits + split;
        part_acc[row * HD + d] = a;
        if (d == 0) {
            part_ml[2 * row] = mx;
            part_ml[2 * row + 1] = ls;
        }
    }
}

// Merges the splits of each (token, head) with its sink logit; block of head_dim threads.
extern "C" __global__ void attn_combine(const float* part_acc, const float* part_ml,
                                        const float* sinks, float* out, int heads, int splits,
                                        int head_dim) {
    const i64 row = blockIdx.x;  // token * heads + head
    const int d = threadIdx.x;
    float mx = sinks ? sinks[row % heads] : -INFINITY;
    for (int s = 0; s < splits; s++) mx = fmaxf(mx, part_ml[2 * (row * splits + s)]);
    float ls = sinks ? expf(sinks[row % heads] - mx) : 0.0f, a = 0.0f;
    for (int s = 0; s < splits; s++) {
        const float ms = part_ml[2 * (row * splits + s)];
        if (ms == -INFINITY) continue;
        const float f = expf(ms - mx);
        ls += part_ml[2 * (row * splits + s) + 1] * f;
        a += part_acc[(row * splits + s) * head_dim + d] * f;
    }
    out[row * head_dim + d] = a / ls;
}

#define ATTN_KERNEL(D, GMAX, KK, VK, NAME)                                                       \
    extern "C" __global__ void __launch_bounds__(32 * ATTN_WARPS)                                \
        attn_partial_d##D##_g##GMAX##_##NAME(                                                    \
            const float* q, const void* kc, const u16* kp, const void* vc, const u16* vp,        \
            const int* positions, const int* seq_of, const int* tables, float* part_acc,         \
            float* part_ml, int heads, int kv_heads, int page_size, int width, int pages,        \
            int head_dim, int window, float scale) {                                             \
        attn_partial_body<D, GMAX, KK, VK>(q, kc, kp, vc, vp, positions, seq_of, tables,         \
                                           part_acc, part_ml, heads, kv_heads, page_size, width, \
                                           pages, head_dim, window, scale);                      \
    }

#define ATTN_KERNELS(D, GMAX)                  \
    ATTN_KERNEL(D, GMAX, KV_F32, KV_F32, f32)  \
    ATTN_KERNEL(D, GMAX, KV_F16, KV_F16, f16)  \
    ATTN_KERNEL(D, GMAX, KV_Q8, KV_Q8, int8)   \
    ATTN_KERNEL(D, GMAX, KV_Q4, KV_Q4, int4)   \
    ATTN_KERNEL(D, GMAX, KV_Q8, KV_Q4, int8_int4)

ATTN_KERNELS(1, 4)
ATTN_KERNELS(1, 8)
ATTN_KERNELS(1, 16)
ATTN_KERNELS(2, 4)
ATTN_KERNELS(2, 8)
ATTN_KERNELS(2, 16)
ATTN_KERNELS(4, 4)
ATTN_KERNELS(4, 8)
ATTN_KERNELS(4, 16)

// ---------------------------------------------------------------------------------------
// Prompts on tensor cores (flash attention) over an f16, int8 or int4 cache (tiles dequantized
// to f16 on the way into shared memory): one sequence's run of query tokens per launch; a
// block takes 64 of them for one head, 16 per warp, and walks the keys any of them sees, 64 at a time: S = Q K^T
// with mma.sync (f16 operands, f32 sums), masked and scaled, an online softmax in registers,
// then O += P V with the probabilities rounded to f16 (as the CPU does over an f16 cache).
// The sink logit joins the denominator at the end. Fragment layouts are those of
// mma.m16n8k16: lane = 4 g + tq holds rows g and g + 8, columns 2 tq, 2 tq + 1 (+ 8).

#define FA_ROWS 64  // query tokens per block
#define FA_KEYS 64  // keys per tile
#define LOG2E 1.4426950408889634f

// Eight values of row `row` from dimension c (a multiple of 8) on, as f16.
template <int D, int KIND>
__device__ __forceinline__ uint4 kv_eight_f16(const void* codes, const u16* params, i64 row, int c) {
    if (KIND == KV_F16) return *(const uint4*)((const u16*)codes + row * D + c);
    u32 h[4];
    if (KIND == KV_Q8) {
        const uint2 w = *(const uint2*)((const u8*)codes + row * D + c);
        const signed char* b = (const signed char*)&w;
        const float s = f16_to_f32(params[row]);
#pragma unroll
        for (int e = 0; e < 4; e++)
            h[e] = f32x2_to_f16x2(__fmul_rn((float)b[2 * e], s), __fmul_rn((float)b[2 * e + 1], s));
    } else {
        const u32 w = *(const u32*)((const u8*)codes + row * (D / 2) + c / 2);
        const float s = f16_to_f32(params[2 * row]), m = f16_to_f32(params[2 * row + 1]);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float lo = (float)((w >> (8 * e)) & 15), hi = (float)((w >> (8 * e + 4)) & 15);
            h[e] = f32x2_to_f16x2(__fadd_rn(__fmul_rn(lo, s), m), __fadd_rn(__fmul_rn(hi, s), m));
        }
    }
    return make_uint4(h[0], h[1], h[2], h[3]);
}

template <int D, int KK, int VK>
__device__ __forceinline__ void attn_prompt_body(
    const float* __restrict__ q, const void* kc, const u16* kp, const void* vc, const u16* vp,
    const int* __restrict__ positions, const int* __restrict__ seq_of,
    const int* __restrict__ tables, const float* __restrict__ sinks, float* __restrict__ out,
    int tokens, int heads, int kv_heads, int page_size, int width, int pages, int window,
    float scale) {
    constexpr int KS = D / 16;         // 16-wide steps over the head dimension
    constexpr int NT = D / 8;          // 8-wide tiles of the output
    constexpr int KP = D + 8;          // padded K row in shared memory (no bank conflicts)
    constexpr int VP = FA_KEYS + 8;    // padded row of V transposed
    __shared__ __align__(16) u16 ks[FA_KEYS * KP];
    __shared__ __align__(16) u16 vt[D * VP];
    __shared__ int span[2];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int h = blockIdx.y, kvh = h / (heads / kv_heads);
    // This lane's two query rows and their positions (-1: past the prompt, sees nothing).
    int row[2], pos[2];
    for (int r = 0; r < 2; r++) {
        row[r] = blockIdx.x * FA_ROWS + 16 * warp + g + 8 * r;
        pos[r] = row[r] < tokens ? max(positions[row[r]], 0) : -1;
    }
    const int seq = seq_of[0];  // one sequence per launch
    // The keys the block's queries see: [lo, hi).
    if (threadIdx.x == 0) {
        span[0] = 0x7fffffff;
        span[1] = 0;
    }
    __syncthreads();
    for (int r = 0; r < 2; r++) {
        if (pos[r] >= 0) {
            atomicMin(&span[0], window > 0 ? max(0, pos[r] - window + 1) : 0);
            atomicMax(&span[1], pos[r] + 1);
        }
    }
    __syncthreads();
    const int lo = span[0], hi = span[1];

    // Q as A fragments, rounded to f16 (as the CPU rounds queries over an f16 cache).
    u32 qa[KS][4];
#pragma unroll
    for (int s = 0; s < KS; s++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = i & 1, col = 16 * s + 2 * tq + 8 * (i >> 1);
            float2 v = make_float2(0.0f, 0.0f);
            if (pos[r] >= 0) v = *(const float2*)(q + ((i64)row[r] * heads + h) * D + col);
            qa[s][i] = f32x2_to_f16x2(v.x, v.y);
        }
    }
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    const float scale2 = scale * LOG2E;  // scores in base-2 exponent units

    for (int j0 = lo; j0 < hi; j0 += FA_KEYS) {
        __syncthreads();  // the last tile's reads are done
        // K rows as they are, V transposed; keys past hi (unwritten cache) as zeros.
        for (int i = threadIdx.x; i < FA_KEYS * D / 8; i += blockDim.x) {
            const int r = i / (D / 8), c = (i % (D / 8)) * 8, j = j0 + r;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
            if (j < hi) {
                const i64 kr = kv_row(tables, seq, width, j, page_size, kv_heads, kvh, pages);
                kv = kv_eight_f16<D, KK>(kc, kp, kr, c);
                vv = kv_eight_f16<D, VK>(vc, vp, kr, c);
            }
            *(uint4*)(ks + r * KP + c) = kv;
            const u16* vh = (const u16*)&vv;
#pragma unroll
            for (int e = 0; e < 8; e++) vt[(c + e) * VP + r] = vh[e];
        }
        __syncthreads();
        float s[FA_KEYS / 8][4];
#pragma unroll
        for (int n = 0; n < FA_KEYS / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            const u16* krow = ks + (8 * n + g) * KP + 2 * tq;
#pragma unroll
            for (int k = 0; k < KS; k++)
                mma_16816(s[n], qa[k], *(const u32*)(krow + 16 * k),
                          *(const u32*)(krow + 16 * k + 8));
        }
        // Mask, scale, and the running max of each row (over the lane quad sharing it).
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int n = 0; n < FA_KEYS / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int j = j0 + 8 * n + 2 * tq + (e & 1), p = pos[e >> 1];
                const bool seen = j <= p && (window <= 0 || j > p - window);
                s[n][e] = seen ? s[n][e] * scale2 : -INFINITY;
                mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
            }
        }
        float base_m[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
            base_m[r] = mx[r] == -INFINITY ? 0.0f : mx[r];  // nothing seen yet
            const float corr = exp2f(m[r] - base_m[r]);
            m[r] = mx[r];
            l[r] *= corr;
#pragma unroll
            for (int n = 0; n < NT; n++) {
                o[n][2 * r] *= corr;
                o[n][2 * r + 1] *= corr;
            }
        }
#pragma unroll
        for (int n = 0; n < FA_KEYS / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[n][e] = exp2f(s[n][e] - base_m[e >> 1]);
                l[e >> 1] += s[n][e];
            }
        }
        // O += P V: two 8-key tiles of P make one 16-key A fragment.
#pragma unroll
        for (int kk = 0; kk < FA_KEYS / 16; kk++) {
            const u32 a[4] = {f32x2_to_f16x2(s[2 * kk][0], s[2 * kk][1]),
                              f32x2_to_f16x2(s[2 * kk][2], s[2 * kk][3]),
                              f32x2_to_f16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              f32x2_to_f16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const u16* vrow = vt + (8 * n + g) * VP + 16 * kk + 2 * tq;
                mma_16816(o[n], a, *(const u32*)vrow, *(const u32*)(vrow + 8));
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 1);
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 2);
        float f = 1.0f;
        if (sinks) {
            const float sink = sinks[h] * LOG2E, top = fmaxf(m[r], sink);
            f = exp2f(m[r] - top);
            l[r] = l[r] * f + exp2f(sink - top);
        }
        if (pos[r] < 0) continue;
        f /= l[r];
        float* dst = out + ((i64)row[r] * heads + h) * D + 2 * tq;
#pragma unroll
        for (int n = 0; n < NT; n++)
            *(float2*)(dst + 8 * n) = make_float2(o[n][2 * r] * f, o[n][2 * r + 1] * f);
    }
}

#define ATTN_PROMPT_KERNEL(D, KK, VK, NAME)                                                    \
    extern "C" __global__ void __launch_bounds__(128) attn_prompt_d##D##_##NAME(               \
        const float* q, const void* kc, const u16* kp, const void* vc, const u16* vp,          \
        const int* positions, const int* seq_of, const int* tables, const float* sinks,        \
        float* out, int tokens, int heads, int kv_heads, int page_size, int width, int pages,  \
        int window, float scale) {                                                             \
        attn_prompt_body<D, KK, VK>(q, kc, kp, vc, vp, positions, seq_of, tables, sinks, out,  \
                                    tokens, heads, kv_heads, page_size, width, pages, window,  \
                                    scale);                                                    \
    }

#define ATTN_PROMPT_KERNELS(D)                   \
    ATTN_PROMPT_KERNEL(D, KV_F16, KV_F16, f16)   \
    ATTN_PROMPT_KERNEL(D, KV_Q8, KV_Q8, int8)    \
    ATTN_PROMPT_KERNEL(D, KV_Q4, KV_Q4, int4)    \
    ATTN_PROMPT_KERNEL(D, KV_Q8, KV_Q4, int8_int4)

ATTN_PROMPT_KERNELS(16)
ATTN_PROMPT_KERNELS(32)
ATTN_PROMPT_KERNELS(64)
ATTN_PROMPT_KERNELS(128)
