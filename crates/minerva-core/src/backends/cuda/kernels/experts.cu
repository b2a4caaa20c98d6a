// A mixture of SwiGLU experts in two launches instead of five (gate, up, SwiGLU, down,
// weighted sum): one reads the gate and up rows of each chosen expert together and writes
// the SwiGLU of the pair; the other reads the down rows of all of a token's experts for the
// same outputs and sums them with the router's weights. Both stream 16-byte chunks like
// matvec_body, with every row's chunk load issued before any is used.

// One projection of an expert stack as these kernels read it: row i of the projection is
// stored row i * step + offset of each expert's matrix (step 2 where gate and up alternate
// in one matrix), with a bias row per expert (`bias_rows` apart) or none.
struct ExpertRows {
    Weight w;
    const float* bias;
    int bias_rows;
    int step;
    int offset;
};

__device__ __forceinline__ i64 stored_row(const ExpertRows& m, int row) {
    return (i64)row * m.step + m.offset;
}

// Chunk c of row `row` of expert e's matrix.
__device__ __forceinline__ uint4 expert_chunk(const ExpertRows& m, int e, int row, int c) {
    const u8* codes = m.w.codes + (i64)e * m.w.expert_bytes + stored_row(m, row) * m.w.row_bytes;
    return ((const uint4*)codes)[c];
}

// The index of the first group parameter of that row.
__device__ __forceinline__ i64 expert_group0(const ExpertRows& m, int e, int row) {
    return (i64)e * m.w.expert_groups + stored_row(m, row) * (m.w.k / m.w.group);
}

__device__ __forceinline__ float expert_bias(const ExpertRows& m, int e, int row) {
    return m.bias ? m.bias[(i64)e * m.bias_rows + stored_row(m, row)] : 0.0f;
}

// Sums acc[set][r] over the block's warps; thread set * R + r gets row r of `set`.
template <int SETS, int R>
__device__ __forceinline__ float block_rows_sum(float (&acc)[SETS][R]) {
    __shared__ float partial[SETS][R][8];  // blocks have at most 8 warps
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int s = 0; s < SETS; s++) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float v = warp_sum(acc[s][r]);
            if (lane == 0) partial[s][r][warp] = v;
        }
    }
    __syncthreads();
    float total = 0.0f;
    if (threadIdx.x < SETS * R) {
        const int s = threadIdx.x / R, r = threadIdx.x % R;
        for (int i = 0; i < warps; i++) total += partial[s][r][i];
    }
    return total;
}

// Block (x, slot, token): rows r0..r0+R of the gate and up projections of the token's
// expert in `slot`, h[token, slot, row] = SwiGLU(gate . x + gate bias, up . x + up bias).
template <class F, int R>
__device__ __forceinline__ void expert_swiglu_body(const ExpertRows& gate, const ExpertRows& up,
                                                   const float* __restrict__ x,
                                                   const int* __restrict__ ids,
                                                   float* __restrict__ h, int inter, float alpha,
                                                   float limit) {
    const int slot = blockIdx.y, slots = gridDim.y, t = blockIdx.z;
    const int e = ids[t * slots + slot];
    const int r0 = blockIdx.x * R;
    const int k = gate.w.k;
    const float* xt = x + (i64)t * k;
    float acc[2][R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[0][r] = acc[1][r] = 0.0f;
    for (int c = threadIdx.x; c < k / F::VALS; c += blockDim.x) {
        uint4 qg[R], qu[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int row = min(r0 + r, inter - 1);  // rows past the end repeat; not stored
            qg[r] = expert_chunk(gate, e, row, c);
            qu[r] = expert_chunk(up, e, row, c);
        }
        typename F::Act a;
        F::load_act(xt + c * F::VALS, a);
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int row = min(r0 + r, inter - 1);
            acc[0][r] += F::dot(gate.w, qg[r], expert_group0(gate, e, row), c, a);
            acc[1][r] += F::dot(up.w, qu[r], expert_group0(up, e, row), c, a);
        }
    }
    const float total = block_rows_sum<2, R>(acc);
    // Threads R..2R-1 hold the up sums; hand them to threads 0..R-1 through shared memory.
    __shared__ float up_sum[R];
    if (threadIdx.x >= R && threadIdx.x < 2 * R) up_sum[threadIdx.x - R] = total;
    __syncthreads();
    const int row = r0 + threadIdx.x;
    if (threadIdx.x < R && row < inter) {
        const float g = total + expert_bias(gate, e, row);
        const float u = up_sum[threadIdx.x] + expert_bias(up, e, row);
        h[((i64)t * slots + slot) * inter + row] = clamped_swiglu(g, u, alpha, limit);
    }
}

// Block (x, token): rows r0..r0+R of y[token] = sum over its slots s of weights[token, s] *
// (down[e_s] . h[token, s] + down bias[e_s]), for at most S slots.
template <class F, int R, int S>
__device__ __forceinline__ void expert_down_body(const ExpertRows& down,
                                                 const float* __restrict__ h,
                                                 const int* __restrict__ ids,
                                                 const float* __restrict__ weights,
                                                 float* __restrict__ y, int slots, int n) {
    const int t = blockIdx.y;
    const int r0 = blockIdx.x * R;
    const int k = down.w.k;
    int e[S];
    float wt[S];
#pragma unroll
    for (int s = 0; s < S; s++) {
        e[s] = s < slots ? ids[t * slots + s] : 0;
        wt[s] = s < slots ? weights[t * slots + s] : 0.0f;
    }
    float acc[1][R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[0][r] = 0.0f;
    for (int c = threadIdx.x; c < k / F::VALS; c += blockDim.x) {
        uint4 q[S][R];
#pragma unroll
        for (int s = 0; s < S; s++) {
            if (s < slots) {
#pragma unroll
                for (int r = 0; r < R; r++) q[s][r] = expert_chunk(down, e[s], min(r0 + r, n - 1), c);
            }
        }
#pragma unroll
        for (int s = 0; s < S; s++) {
            if (s < slots) {
                typename F::Act a;
                F::load_act(h + ((i64)t * slots + s) * k + c * F::VALS, a);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    const int row = min(r0 + r, n - 1);
                    acc[0][r] += wt[s] * F::dot(down.w, q[s][r], expert_group0(down, e[s], row), c, a);
                }
            }
        }
    }
    const float total = block_rows_sum<1, R>(acc);
    const int row = r0 + threadIdx.x;
    if (threadIdx.x < R && row < n) {
        float b = 0.0f;
        for (int s = 0; s < slots && s < S; s++) b += wt[s] * expert_bias(down, e[s], row);
        y[(i64)t * n + row] = total + b;
    }
}

#define EXPERT_SWIGLU_KERNEL(NAME, F, R)                                                         \
    extern "C" __global__ void expert_swiglu_##NAME##_r##R(ExpertRows gate, ExpertRows up,       \
                                                           const float* x, const int* ids,       \
                                                           float* h, int inter, float alpha,     \
                                                           float limit) {                        \
        expert_swiglu_body<F, R>(gate, up, x, ids, h, inter, alpha, limit);                      \
    }

#define EXPERT_DOWN_KERNEL(NAME, F, R, S)                                                        \
    extern "C" __global__ void expert_down_##NAME##_r##R##_s##S(                                 \
        ExpertRows down, const float* h, const int* ids, const float* weights, float* y,        \
        int slots, int n) {                                                                      \
        expert_down_body<F, R, S>(down, h, ids, weights, y, slots, n);                           \
    }

#define EXPERT_KERNELS(NAME, F)          \
    EXPERT_SWIGLU_KERNEL(NAME, F, 8)     \
    EXPERT_SWIGLU_KERNEL(NAME, F, 4)     \
    EXPERT_SWIGLU_KERNEL(NAME, F, 1)     \
    EXPERT_DOWN_KERNEL(NAME, F, 4, 4)    \
    EXPERT_DOWN_KERNEL(NAME, F, 2, 4)    \
    EXPERT_DOWN_KERNEL(NAME, F, 1, 4)    \
    EXPERT_DOWN_KERNEL(NAME, F, 2, 8)    \
    EXPERT_DOWN_KERNEL(NAME, F, 1, 8)

EXPERT_KERNELS(mxfp4, MvMxfp4)
EXPERT_KERNELS(affine8, MvAffine8)
EXPERT_KERNELS(affine4, MvAffine4)

// ---------------------------------------------------------------------------------------
// Prompts: the (token, slot) pairs sorted by expert so each expert's rows are one
// tensor-core product (`ops/experts.rs`); row i of the sorted products is pair order[i],
// and pair p sits at row rank[p].

// h[i] = SwiGLU(gate + gate bias, up + bias) in f16, from gu (f32 [pairs, 2 * inter]: the
// gate products, then the up products, of each sorted row).
extern "C" __global__ void expert_swiglu_sorted(const float* __restrict__ gu,
                                                const int* __restrict__ order,
                                                const int* __restrict__ ids, ExpertRows gate,
                                                ExpertRows up, i64 pairs, int inter, float alpha,
                                                float limit, u16* __restrict__ h) {
    GRID_STRIDE(i, pairs * inter) {
        const i64 r = i / inter;
        const int c = (int)(i - r * inter), e = ids[order[r]];
        const float* row = gu + r * 2 * inter;
        const float g = row[c] + expert_bias(gate, e, c);
        const float u = row[inter + c] + expert_bias(up, e, c);
        h[i] = f32_to_f16(clamped_swiglu(g, u, alpha, limit));
    }
}

// out[t] = sum_j weights[t, j] (y[rank[t, j]] + the down bias of expert ids[t, j]).
extern "C" __global__ void expert_mix_sorted(const float* __restrict__ y,
                                             const int* __restrict__ rank,
                                             const int* __restrict__ ids,
                                             const float* __restrict__ weights, ExpertRows down,
                                             i64 tokens, int slots, int hidden,
                                             float* __restrict__ out) {
    GRID_STRIDE(i, tokens * hidden) {
        const i64 t = i / hidden;
        const int c = (int)(i - t * hidden);
        float s = 0.0f;
        for (int j = 0; j < slots; j++) {
            const i64 p = t * slots + j;
            s = fmaf(weights[p], y[(i64)rank[p] * hidden + c] + expert_bias(down, ids[p], c), s);
        }
        out[i] = s;
    }
}
