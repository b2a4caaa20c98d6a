// Decode products on tensor cores: one token or a few (a batch of decoding sequences) times
// MLX affine 8-bit weights. On CUDA cores a few tokens cost a multiply-add per weight per
// token, which at ten tokens is more arithmetic than an H100 does in the time it reads the
// weights; mma.sync does 16 tokens for the price of one.
//
// mma.m16n8k16 with the tokens as A (16 rows) and eight weight rows as B (8 columns): lane
// 4 g + t holds, for each k slice of 16,
//     B: weight row g at slice positions 2t, 2t+1, 2t+8, 2t+9,
//     A: tokens g and g + 8 at the same positions,
//     C: tokens g and g + 8 times weight rows 2t and 2t + 1.
// Positions are a permutation of k (any works if A and B agree): a lane's four are four
// values it decoded from one 16-byte chunk, so each lane streams whole chunks.
//
// Weights go into the products as small integers (the affine codes), exact in f16; each
// group's scale and bias are applied to the f32 sum of its slices, so the only rounding
// before the f32 sums is the activations' to f16 (as MLX's 16-bit runs). A block's 8 warps
// split the k-blocks the same way whatever the number of tokens, and every token is its
// own column of each product: a token gets the same bits alone or in a batch of any size.

#define TC_WARPS 8

__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
    u32 r;
    asm("{sub.rn.f16x2 %0, %1, %2;}" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

// One weight row as the products read it.
struct TcRow {
    const u8* codes;  // the row's first byte
    i64 g0;           // index of the row's first group parameter
};

// MLX affine 8-bit with groups of 64 or 128 values: a k-block is 64 values, lane t takes
// chunk 4 kb + t (16 codes), and all four chunks share one group.
struct TcAffine8 {
    static constexpr int KB = 64;      // values per k-block
    static constexpr int SLICES = 4;   // k slices of 16 per k-block
    // Lane t's codes of k-block kb in a row: chunk 4 kb + t (zero past the row's end).
    __device__ static uint4 load(const u8* row, int kb, int t, int chunks) {
        const int c = 4 * kb + t;
        return c < chunks ? ((const uint4*)row)[c] : make_uint4(0, 0, 0, 0);
    }
    // B fragment of slice i: codes 4i .. 4i + 3 as f16 (1024 + q by a byte permute, exact,
    // minus 1024).
    __device__ static void frag(const uint4& q, int i, u32& b0, u32& b1) {
        const u32 w = i == 0 ? q.x : i == 1 ? q.y : i == 2 ? q.z : q.w;
        b0 = hsub2(__byte_perm(w, 0x64646464u, 0x4140u), 0x64006400u);
        b1 = hsub2(__byte_perm(w, 0x64646464u, 0x4342u), 0x64006400u);
    }
    // Lane t's 16 activations of the k-block (from x, the k-block's first) as f16 pairs
    // (slice i takes pairs 2i, 2i + 1), and their f32 sum.
    __device__ static void load_act(const float* x, int t, u32* p, float& sum) {
        const float4* x4 = (const float4*)(x + 16 * t);
        sum = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float4 v = x4[i];
            p[2 * i] = f32x2_to_f16x2(v.x, v.y);
            p[2 * i + 1] = f32x2_to_f16x2(v.z, v.w);
            sum += (v.x + v.y) + (v.z + v.w);
        }
    }
    // acc + s sum(q x) + b sum(x) for the group of k-block kb.
    __device__ static float post(const Weight& w, const TcRow& r, int kb, float qx, float xsum,
                                 float acc) {
        const i64 g = r.g0 + (i64)kb * KB / w.group;
        const float s = load_param(w.scales, w.param_kind, g);
        const float b = load_param(w.biases, w.param_kind, g);
        return acc + fmaf(s, qx, b * xsum);
    }
};

// Per-warp sums of a block: [warp][tile][token][row of the tile].
template <int TILES>
struct TcPartial {
    float v[TC_WARPS][TILES][16][8];
    // The block's sum: the warps' in order.
    __device__ float total(int tile, int token, int r) const {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < TC_WARPS; w++) s += v[w][tile][token][r];
        return s;
    }
};

// Row `row` (clamped into n rows) of a plain weight.
__device__ __forceinline__ TcRow plain_row(const Weight& w, int row, int n) {
    row = min(row, n - 1);  // rows past the end repeat the last; not stored
    return TcRow{w.codes + (i64)row * w.row_bytes, (i64)row * (w.k / w.group)};
}

// Products of TILES tiles of 8 rows from r0 on with m <= 16 tokens (x: token 0's
// activations, k apart) into `part`, which every thread may read on return.
template <class F, int TILES>
__device__ __forceinline__ void tc_sums(const Weight& w, int r0, int n, const float* x, int m,
                                        TcPartial<TILES>& part) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int chunks = w.k / 16, kblocks = (chunks + 3) / 4;
    const u8* brow[TILES];
#pragma unroll
    for (int tile = 0; tile < TILES; tile++) brow[tile] = plain_row(w, r0 + 8 * tile + g, n).codes;
    float acc[TILES][4];
#pragma unroll
    for (int tile = 0; tile < TILES; tile++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[tile][c] = 0.0f;
    auto load = [&](int kb, uint4 (&raw)[TILES]) {
#pragma unroll
        for (int tile = 0; tile < TILES; tile++)
            raw[tile] = kb < kblocks ? F::load(brow[tile], kb, t, chunks) : make_uint4(0, 0, 0, 0);
    };
    uint4 raw[TILES], next[TILES];
    load(warp, raw);
    for (int kb = warp; kb < kblocks; kb += TC_WARPS) {
        load(kb + TC_WARPS, next);  // in flight while this k-block is multiplied
        // Tokens g and g + 8: their activations and the group sums over the row's 4 lanes.
        u32 act[2][8];
        float xsum[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int token = g + 8 * h;
            if (token < m && 4 * kb + t < chunks) {
                F::load_act(x + (i64)token * w.k + kb * F::KB, t, act[h], xsum[h]);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) act[h][i] = 0;
                xsum[h] = 0.0f;
            }
            xsum[h] += __shfl_xor_sync(FULL_MASK, xsum[h], 1);
            xsum[h] += __shfl_xor_sync(FULL_MASK, xsum[h], 2);
        }
#pragma unroll
        for (int tile = 0; tile < TILES; tile++) {
            float qx[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int i = 0; i < F::SLICES; i++) {
                u32 b0, b1;
                F::frag(raw[tile], i, b0, b1);
                const u32 a[4] = {act[0][2 * i], act[1][2 * i], act[0][2 * i + 1],
                                  act[1][2 * i + 1]};
                mma_16816(qx, a, b0, b1);
            }
#pragma unroll
            for (int e = 0; e < 2; e++) {  // C columns 2t and 2t + 1
                const TcRow r = plain_row(w, r0 + 8 * tile + 2 * t + e, n);
#pragma unroll
                for (int h = 0; h < 2; h++)
                    acc[tile][2 * h + e] = F::post(w, r, kb, qx[2 * h + e], xsum[h], acc[tile][2 * h + e]);
            }
        }
#pragma unroll
        for (int tile = 0; tile < TILES; tile++) raw[tile] = next[tile];
    }
#pragma unroll
    for (int tile = 0; tile < TILES; tile++) {
        part.v[warp][tile][g][2 * t] = acc[tile][0];
        part.v[warp][tile][g][2 * t + 1] = acc[tile][1];
        part.v[warp][tile][g + 8][2 * t] = acc[tile][2];
        part.v[warp][tile][g + 8][2 * t + 1] = acc[tile][3];
    }
    __syncthreads();
}

// Block x: rows 8 TILES x .. of y[t] = x[t] . w + bias, for every token, 16 per pass.
template <class F, int TILES>
__device__ __forceinline__ void tc_linear_body(const Weight& w, const float* __restrict__ x,
                                               const float* __restrict__ bias,
                                               float* __restrict__ y, int n, int tokens) {
    __shared__ TcPartial<TILES> part;
    const int r0 = blockIdx.x * 8 * TILES;
    for (int t0 = 0; t0 < tokens; t0 += 16) {
        const int m = min(16, tokens - t0);
        tc_sums<F, TILES>(w, r0, n, x + (i64)t0 * w.k, m, part);
        for (int i = threadIdx.x; i < m * 8 * TILES; i += blockDim.x) {
            const int j = i / (8 * TILES), tile = (i / 8) % TILES, r = i % 8;
            const int row = r0 + 8 * tile + r;
            if (row < n) y[(i64)(t0 + j) * n + row] = part.total(tile, j, r) + (bias ? bias[row] : 0.0f);
        }
        __syncthreads();  // `part` is rewritten by the next pass
    }
}

// Two blocks of 256 threads per SM: at most 128 registers a thread.
#define TC_LINEAR_KERNEL(NAME, F, TILES)                                                      \
    extern "C" __global__ void __launch_bounds__(32 * TC_WARPS, 2)                            \
        tc_linear_##NAME##_t##TILES(Weight w, const float* x, const float* bias, float* y,   \
                                    int n, int tokens) {                                      \
        tc_linear_body<F, TILES>(w, x, bias, y, n, tokens);                                   \
    }

TC_LINEAR_KERNEL(affine8, TcAffine8, 4)
TC_LINEAR_KERNEL(affine8, TcAffine8, 2)
TC_LINEAR_KERNEL(affine8, TcAffine8, 1)
