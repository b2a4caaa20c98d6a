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
// (down[e_s] . h[token, s] + down bias[e_s]), for at most S slots. Each slot's product is
// summed on its own and mixed in slot order, as expert_mix_sorted mixes the grouped
// kernels' products: a token gets the same bits alone or in a batch.
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
#pragma unroll
    for (int s = 0; s < S; s++) e[s] = s < slots ? ids[t * slots + s] : 0;
    float acc[S][R];
#pragma unroll
    for (int s = 0; s < S; s++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[s][r] = 0.0f;
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
                    acc[s][r] += F::dot(down.w, q[s][r], expert_group0(down, e[s], row), c, a);
                }
            }
        }
    }
    __shared__ float sums[S][R];
    const float total = block_rows_sum<S, R>(acc);
    if (threadIdx.x < S * R) sums[threadIdx.x / R][threadIdx.x % R] = total;
    __syncthreads();
    const int row = r0 + threadIdx.x;
    if (threadIdx.x < R && row < n) {
        float mixed = 0.0f;
        for (int s = 0; s < slots && s < S; s++)
            mixed = fmaf(weights[t * slots + s], sums[s][threadIdx.x] + expert_bias(down, e[s], row),
                         mixed);
        y[(i64)t * n + row] = mixed;
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

// ---------------------------------------------------------------------------------------
// A few tokens (a batch of decoding sequences): the (token, slot) pairs grouped by expert on
// the device, so each chosen expert's rows are read once for all of its pairs instead of
// once per pair, with no trip to the host (a captured graph replays it). Each 16-byte chunk
// of weights is decoded once and dotted with the activations of each of the expert's
// pairs; the products are the one-token kernels' own, chunk for chunk.

// The pairs of `ids` ([pairs] expert ids) grouped by expert. `out`: the number of experts
// with pairs, then `max_active` expert ids (ascending), their first sorted rows and their
// pair counts, then `order` (sorted row -> pair) and `rank` (pair -> sorted row); an
// expert's pairs keep their order. One block; ids outside 0..experts count as expert 0
// (the router's top-k makes them in range).
#define MAX_GROUPED_EXPERTS 1024
extern "C" __global__ void expert_groups(const int* __restrict__ ids, int pairs, int experts,
                                         int max_active, int* __restrict__ out) {
    __shared__ int first_row[MAX_GROUPED_EXPERTS];
    int *expert = out + 1, *start = expert + max_active, *count = start + max_active;
    int *order = count + max_active, *rank = order + pairs;
    auto id = [&](int p) { const int e = ids[p]; return e >= 0 && e < experts ? e : 0; };
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        int n = 0;
        for (int p = 0; p < pairs; p++) n += id(p) == e;
        first_row[e] = n;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int active = 0, row = 0;
        for (int e = 0; e < experts; e++) {
            const int n = first_row[e];
            if (n > 0) {
                expert[active] = e;
                start[active] = row;
                count[active] = n;
                active++;
            }
            first_row[e] = row;
            row += n;
        }
        out[0] = active;
    }
    __syncthreads();
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        const int e = id(p);
        int r = first_row[e];
        for (int q = 0; q < p; q++) r += id(q) == e;
        order[r] = p;
        rank[p] = r;
    }
}

// The groups `expert_groups` wrote, as the grouped kernels read them.
struct ExpertGroups {
    const int* g;
    int max_active;
    __device__ int active() const { return g[0]; }
    __device__ int expert(int a) const { return g[1 + a]; }
    __device__ int start(int a) const { return g[1 + max_active + a]; }
    __device__ int count(int a) const { return g[1 + 2 * max_active + a]; }
    __device__ int pair(int row) const { return g[1 + 3 * max_active + row]; }
};

// Block (x, a): rows r0..r0+R of the gate and up projections of the a-th expert with pairs,
// for its pairs NT at a time: h[sorted row, row] = SwiGLU(gate . x + bias, up . x + bias),
// x the pair's token's activations. A thread keeps its chunk of all R rows in flight and
// decodes one row at a time.
template <class F, int R, int NT>
__device__ __forceinline__ void expert_swiglu_grouped_body(const ExpertRows& gate,
                                                           const ExpertRows& up,
                                                           const float* __restrict__ x,
                                                           ExpertGroups groups, int slots,
                                                           float* __restrict__ h, int inter,
                                                           float alpha, float limit) {
    const int a = blockIdx.y;
    if (a >= groups.active()) return;  // the whole block leaves
    const int e = groups.expert(a), row0 = groups.start(a), n = groups.count(a);
    const int r0 = blockIdx.x * R;
    const int k = gate.w.k, chunks = k / F::VALS;
    __shared__ float sums[2 * NT][R];
    for (int p0 = 0; p0 < n; p0 += NT) {
        const int m = min(NT, n - p0);
        const float* xt[NT];
#pragma unroll
        for (int j = 0; j < NT; j++)
            xt[j] = x + (i64)(groups.pair(row0 + p0 + min(j, m - 1)) / slots) * k;
        float acc[2 * NT][R];
#pragma unroll
        for (int s = 0; s < 2 * NT; s++)
#pragma unroll
            for (int r = 0; r < R; r++) acc[s][r] = 0.0f;
        for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
            uint4 qg[R], qu[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int row = min(r0 + r, inter - 1);  // rows past the end repeat; not stored
                qg[r] = expert_chunk(gate, e, row, c);
                qu[r] = expert_chunk(up, e, row, c);
            }
            typename F::Act act[NT];
#pragma unroll
            for (int j = 0; j < NT; j++)
                if (j < m) F::load_act(xt[j] + c * F::VALS, act[j]);
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int row = min(r0 + r, inter - 1);
                const typename F::Dec dg = F::decode(gate.w, qg[r], expert_group0(gate, e, row), c);
#pragma unroll
                for (int j = 0; j < NT; j++)
                    if (j < m) acc[j][r] += F::dot(dg, act[j]);
                const typename F::Dec du = F::decode(up.w, qu[r], expert_group0(up, e, row), c);
#pragma unroll
                for (int j = 0; j < NT; j++)
                    if (j < m) acc[NT + j][r] += F::dot(du, act[j]);
            }
        }
        const float total = block_rows_sum<2 * NT, R>(acc);
        if (threadIdx.x < 2 * NT * R) sums[threadIdx.x / R][threadIdx.x % R] = total;
        __syncthreads();
        if (threadIdx.x < NT * R) {
            const int j = threadIdx.x / R, r = threadIdx.x % R, row = r0 + r;
            if (j < m && row < inter) {
                const float g = sums[j][r] + expert_bias(gate, e, row);
                const float u = sums[NT + j][r] + expert_bias(up, e, row);
                h[(i64)(row0 + p0 + j) * inter + row] = clamped_swiglu(g, u, alpha, limit);
            }
        }
        __syncthreads();  // sums and block_rows_sum's partials are reused by the next pass
    }
}

// Block (x, a): rows r0..r0+R of the a-th expert's down projection for its pairs, NT at a
// time: y[sorted row, row] = down . h[sorted row] (bias and router weight are added by
// expert_mix_sorted).
template <class F, int R, int NT>
__device__ __forceinline__ void expert_down_grouped_body(const ExpertRows& down,
                                                         const float* __restrict__ h,
                                                         ExpertGroups groups,
                                                         float* __restrict__ y, int n) {
    const int a = blockIdx.y;
    if (a >= groups.active()) return;  // the whole block leaves
    const int e = groups.expert(a), row0 = groups.start(a), pairs = groups.count(a);
    const int r0 = blockIdx.x * R;
    const int k = down.w.k, chunks = k / F::VALS;
    for (int p0 = 0; p0 < pairs; p0 += NT) {
        const int m = min(NT, pairs - p0);
        float acc[NT][R];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int r = 0; r < R; r++) acc[j][r] = 0.0f;
        for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
            uint4 q[R];
#pragma unroll
            for (int r = 0; r < R; r++) q[r] = expert_chunk(down, e, min(r0 + r, n - 1), c);
            typename F::Act act[NT];
#pragma unroll
            for (int j = 0; j < NT; j++)
                if (j < m) F::load_act(h + (i64)(row0 + p0 + j) * k + c * F::VALS, act[j]);
#pragma unroll
            for (int r = 0; r < R; r++) {
                const typename F::Dec d =
                    F::decode(down.w, q[r], expert_group0(down, e, min(r0 + r, n - 1)), c);
#pragma unroll
                for (int j = 0; j < NT; j++)
                    if (j < m) acc[j][r] += F::dot(d, act[j]);
            }
        }
        const float total = block_rows_sum<NT, R>(acc);
        const int j = threadIdx.x / R, row = r0 + threadIdx.x % R;
        if (threadIdx.x < NT * R && j < m && row < n) y[(i64)(row0 + p0 + j) * n + row] = total;
        __syncthreads();  // block_rows_sum's partials are reused by the next pass
    }
}

#define GROUPED_SWIGLU_KERNEL(NAME, F, R, NT)                                                  \
    extern "C" __global__ void expert_swiglu_grouped_##NAME##_r##R(                              \
        ExpertRows gate, ExpertRows up, const float* x, const int* groups, int max_active,      \
        int slots, float* h, int inter, float alpha, float limit) {                             \
        expert_swiglu_grouped_body<F, R, NT>(gate, up, x, ExpertGroups{groups, max_active},     \
                                             slots, h, inter, alpha, limit);                    \
    }

#define GROUPED_DOWN_KERNEL(NAME, F, R, NT)                                                    \
    extern "C" __global__ void expert_down_grouped_##NAME##_r##R(                                \
        ExpertRows down, const float* h, const int* groups, int max_active, float* y, int n) {  \
        expert_down_grouped_body<F, R, NT>(down, h, ExpertGroups{groups, max_active}, y, n);    \
    }

// Rows per block and pairs per pass (`ops/experts.rs` picks the rows): registers allow
// fewer pairs for the affine formats, whose decoded chunks are floats.
GROUPED_SWIGLU_KERNEL(mxfp4, MvMxfp4, 4, 2)
GROUPED_SWIGLU_KERNEL(mxfp4, MvMxfp4, 2, 2)
GROUPED_DOWN_KERNEL(mxfp4, MvMxfp4, 8, 4)
GROUPED_DOWN_KERNEL(mxfp4, MvMxfp4, 2, 4)
GROUPED_SWIGLU_KERNEL(affine8, MvAffine8, 4, 2)
GROUPED_SWIGLU_KERNEL(affine8, MvAffine8, 2, 2)
GROUPED_DOWN_KERNEL(affine8, MvAffine8, 4, 2)
GROUPED_DOWN_KERNEL(affine8, MvAffine8, 2, 2)
GROUPED_SWIGLU_KERNEL(affine4, MvAffine4, 4, 2)
GROUPED_SWIGLU_KERNEL(affine4, MvAffine4, 2, 2)
GROUPED_DOWN_KERNEL(affine4, MvAffine4, 4, 2)
GROUPED_DOWN_KERNEL(affine4, MvAffine4, 2, 2)
