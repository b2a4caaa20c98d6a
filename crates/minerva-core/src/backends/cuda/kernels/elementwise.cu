// Row-wise kernels on f32 activations that compiled graphs (backends/cuda/fused.rs) do not
// generate: rotary embedding, layout changes, routing. One thread per element unless a row
// needs a reduction, then one block per row.

// op 0: a + b, 1: a * b; b has `m` values and repeats over a's `n` (a suffix broadcast).
// Adds a product's bias (elementwise ops of the model come from compiled graphs).
extern "C" __global__ void binary_bcast(const float* a, const float* b, float* out, i64 n, i64 m, int op) {
    GRID_STRIDE(i, n) {
        const float y = b[i % m];
        out[i] = op == 0 ? a[i] + y : a[i] * y;
    }
}

// out[r] = x[index ? index[r] / divisor : r] in f16, for rows of k (even) values: the
// activation operand of a tensor-core product, gathered where the rows are a selection.
extern "C" __global__ void rows_to_f16(const float* x, const int* index, int divisor, i64 rows,
                                       int k, u32* out) {
    const int pairs = k / 2;
    GRID_STRIDE(i, rows * pairs) {
        const i64 r = i / pairs;
        const i64 src = index ? index[r] / divisor : r;
        const float2 v = ((const float2*)(x + src * k))[i - r * pairs];
        out[i] = f32x2_to_f16x2(v.x, v.y);
    }
}

// The bandwidth probe: 16-byte loads and stores, n of them.
extern "C" __global__ void copy_u4(const uint4* __restrict__ src, uint4* __restrict__ dst, i64 n) {
    GRID_STRIDE(i, n) dst[i] = src[i];
}

struct RopeFreqs {
    float inv_freq[128];
};

// Rotates `[tokens, heads, head_dim]` by positions[t] * inv_freq; block per (token, head),
// thread per rotated pair. style 0: pairs (2i, 2i+1); 1: pairs (i, i + half).
extern "C" __global__ void rope(const float* x, float* out, const int* positions, RopeFreqs f,
                                int heads, int head_dim, int half, int style, float mscale) {
    const int t = blockIdx.x / heads;
    const float* xh = x + (i64)blockIdx.x * head_dim;
    float* oh = out + (i64)blockIdx.x * head_dim;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        if (i >= 2 * half) oh[i] = xh[i];
    }
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float s, c;
        sincosf((float)positions[t] * f.inv_freq[i], &s, &c);
        c *= mscale;
        s *= mscale;
        const int a = style == 0 ? 2 * i : i;
        const int b = style == 0 ? 2 * i + 1 : i + half;
        const float x0 = xh[a], x1 = xh[b];
        oh[a] = x0 * c - x1 * s;
        oh[b] = x0 * s + x1 * c;
    }
}

// [.., 2n] -> even and odd entries.
extern "C" __global__ void deinterleave(const float* x, float* even, float* odd, i64 pairs) {
    GRID_STRIDE(i, pairs) {
        even[i] = x[2 * i];
        odd[i] = x[2 * i + 1];
    }
}

// `[batch, a, b]` (f32, f16 or bf16 by kind 0/1/2) -> f32 `[batch, b, a]`.
extern "C" __global__ void transpose_last2(const void* x, float* out, i64 batch, int a, int b, int kind) {
    GRID_STRIDE(i, batch * a * b) {
        const i64 m = i / ((i64)a * b), rest = i % ((i64)a * b);
        const int r = rest / a, c = rest % a;  // out[m, r, c] = x[m, c, r]
        const i64 src = m * a * b + (i64)c * b + r;
        out[i] = kind == 0 ? ((const float*)x)[src]
               : kind == 1 ? f16_to_f32(((const u16*)x)[src])
                           : bf16_to_f32(((const u16*)x)[src]);
    }
}

// Mixture-of-experts routing: one warp per token picks the k highest of `experts` scores
// (ties to the lower index) and softmaxes over just those.
extern "C" __global__ void top_k_softmax(const float* scores, int* ids, float* weights, int tokens,
                                         int experts, int k) {
    const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (t >= tokens) return;
    const float* row = scores + (i64)t * experts;
    u32 taken = 0;  // per lane: bit j marks expert lane + 32 j as chosen (experts <= 1024)
    float top = 0.0f, sum = 0.0f, mine = 0.0f;
    for (int j = 0; j < k; j++) {
        float best = -INFINITY;
        int best_e = 0x7fffffff;
        for (int e = lane, b = 0; e < experts; e += 32, b++) {
            const float v = row[e];
            if (!(taken >> b & 1) && (v > best || (v == best && e < best_e))) {
                best = v;
                best_e = e;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, best, o);
            const int oe = __shfl_xor_sync(FULL_MASK, best_e, o);
            if (ov > best || (ov == best && oe < best_e)) {
                best = ov;
                best_e = oe;
            }
        }
        if ((best_e & 31) == lane) taken |= 1u << (best_e >> 5);
        if (j == 0) top = best;
        const float p = expf(best - top);
        sum += p;
        if (lane == j) {
            ids[(i64)t * k + j] = best_e;
            mine = p;
        }
    }
    if (lane < k) weights[(i64)t * k + lane] = mine / sum;
}

// out[t] = sum over slots s of w[t, s] * y[t, s] for `[tokens, slots, d]` y.
extern "C" __global__ void weighted_sum(const float* y, const float* w, float* out, int slots,
                                        i64 tokens_d, int d) {
    GRID_STRIDE(i, tokens_d) {
        const i64 t = i / d;
        const int c = i % d;
        float s = 0.0f;
        for (int j = 0; j < slots; j++) s += w[t * slots + j] * y[(t * slots + j) * d + c];
        out[i] = s;
    }
}
