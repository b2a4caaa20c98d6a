// Causal grouped-query attention over a `[kv_heads, capacity, head_dim]` cache (f16 or f32),
// split over the keys (flash-decoding): each block takes one query token, one KV head with
// all the query heads that share it, and one slice of the visible keys, and leaves a partial
// (max, sum, weighted values); a second kernel merges the slices and the sink logits.
// Everything that varies per step (positions, hence the visible range) is read on the
// device, so a captured graph replays unchanged.

#define ATTN_WARPS 4

// The lane's dimensions (lane, lane + 32, ...) of the cached row at `row` (0 past head_dim).
template <int D, bool HALF>
__device__ __forceinline__ void load_kv_row(const void* c, i64 row, int lane, int head_dim,
                                            float* out) {
#pragma unroll
    for (int d = 0; d < D; d++) {
        const int dim = lane + 32 * d;
        const i64 i = row + dim;
        out[d] = dim >= head_dim ? 0.0f
                 : HALF          ? f16_to_f32(((const u16*)c)[i])
                                 : ((const float*)c)[i];
    }
}

template <int D, int GMAX, bool HALF>
__device__ __forceinline__ void attn_partial_body(const float* __restrict__ q, const void* kc,
                                                  const void* vc, const int* __restrict__ positions,
                                                  float* __restrict__ part_acc,
                                                  float* __restrict__ part_ml, int heads,
                                                  int kv_heads, int capacity, int head_dim,
                                                  int window, float scale) {
    // Lane `l` holds dimensions l, l + 32, ... below head_dim (at most 32 D of them).
    const int HD = head_dim;
    __shared__ float sm_m[ATTN_WARPS][GMAX];
    __shared__ float sm_l[ATTN_WARPS][GMAX];
    __shared__ float sm_acc[ATTN_WARPS][GMAX][32 * D];
    const int split = blockIdx.x, splits = gridDim.x, h = blockIdx.y, t = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int G = heads / kv_heads;
    const int p = min(max(positions[t], 0), capacity - 1);  // never read outside the cache
    const int lo = window > 0 ? max(0, p - window + 1) : 0;
    const int chunk = (p + 1 - lo + splits - 1) / splits;
    const int start = lo + split * chunk, end = min(p + 1, start + chunk);

    float qr[GMAX][D], acc[GMAX][D], m[GMAX], l[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int d = 0; d < D; d++) {
            acc[g][d] = 0.0f;
            // With an f16 cache the queries are rounded to f16 as well (as the CPU backend
            // and llama.cpp do), so each product has two f16 operands.
            const bool in = g < G && lane + 32 * d < HD;
            const float qv = in ? q[((i64)t * heads + h * G + g) * HD + lane + 32 * d] : 0.0f;
            qr[g][d] = HALF ? f16_to_f32(f32_to_f16(qv)) : qv;
        }
    }
    const i64 base = (i64)h * capacity * HD;
    for (int j = start + warp; j < end; j += ATTN_WARPS) {
        float kr[D], vr[D], sc[GMAX];
        load_kv_row<D, HALF>(kc, base + (i64)j * HD, lane, HD, kr);
#pragma unroll
        for (int g = 0; g < GMAX; g++) {
            if (g < G) {
                float s = 0.0f;
#pragma unroll
                for (int d = 0; d < D; d++) s = fmaf(qr[g][d], kr[d], s);
                sc[g] = warp_sum(s) * scale;
            }
        }
        load_kv_row<D, HALF>(vc, base + (i64)j * HD, lane, HD, vr);
#pragma unroll
        for (int g = 0; g < GMAX; g++) {
            if (g < G) {
                const float mn = fmaxf(m[g], sc[g]);
                const float corr = expf(m[g] - mn), pe = expf(sc[g] - mn);
                l[g] = l[g] * corr + pe;
#pragma unroll
                for (int d = 0; d < D; d++) acc[g][d] = fmaf(acc[g][d], corr, pe * vr[d]);
                m[g] = mn;
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

#define ATTN_KERNEL(D, GMAX, HALF, NAME)                                                            \
    extern "C" __global__ void __launch_bounds__(32 * ATTN_WARPS)                                   \
        attn_partial_d##D##_g##GMAX##_##NAME(const float* q, const void* kc, const void* vc,        \
                                             const int* positions, float* part_acc,                 \
                                             float* part_ml, int heads, int kv_heads,               \
                                             int capacity, int head_dim, int window, float scale) { \
        attn_partial_body<D, GMAX, HALF>(q, kc, vc, positions, part_acc, part_ml, heads, kv_heads, \
                                         capacity, head_dim, window, scale);                        \
    }

#define ATTN_KERNELS(D, GMAX)          \
    ATTN_KERNEL(D, GMAX, true, f16)    \
    ATTN_KERNEL(D, GMAX, false, f32)

ATTN_KERNELS(1, 4)
ATTN_KERNELS(1, 8)
ATTN_KERNELS(1, 16)
ATTN_KERNELS(2, 4)
ATTN_KERNELS(2, 8)
ATTN_KERNELS(2, 16)
ATTN_KERNELS(4, 4)
ATTN_KERNELS(4, 8)
ATTN_KERNELS(4, 16)
