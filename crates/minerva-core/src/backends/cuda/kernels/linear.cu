// Matrix-vector products that read packed weights in place (formats in products.cuh): each
// warp owns one weight row, each lane decodes 16-byte chunks (or one GGUF block) into
// registers and dots them with the f32 activations, and a warp reduction finishes the row.
// Decode (one token) reads every weight byte once; a few tokens at a time share each
// decoded chunk.

// y[t, r] = x[t] . w[r] + bias[r] for NT tokens per block (grid.y tiles the tokens), or,
// with `ids` set, the gathered form: block y is a (token, slot) pair whose weight is the
// stacked matrix ids[pair], with the input row per pair (x_per_slot) or per token. `bx` is
// the block's place along the rows (blockIdx.x, less the blocks of products before it when
// several share a launch).
template <class F, int NT>
__device__ __forceinline__ void linear_body(const Weight& w, const float* __restrict__ x,
                                            const float* __restrict__ bias, float* __restrict__ y,
                                            int n, int tokens, const int* __restrict__ ids,
                                            int slots, int x_per_slot, int bx) {
    const int lane = threadIdx.x & 31;
    const int r = bx * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= n) return;
    const int k = w.k;
    const u8* row = w.codes + (i64)r * w.row_bytes;
    i64 g0 = (i64)r * (k / w.group);
    const float* xt;
    float* yt;
    int nt;
    if (ids) {
        const int pair = blockIdx.y;
        const int e = ids[pair];
        row += (i64)e * w.expert_bytes;
        g0 += (i64)e * w.expert_groups;
        if (bias) bias += (i64)e * n;
        xt = x + (i64)(x_per_slot ? pair : pair / slots) * k;
        yt = y + (i64)pair * n;
        nt = 1;
    } else {
        const int t0 = blockIdx.y * NT;
        xt = x + (i64)t0 * k;
        yt = y + (i64)t0 * n;
        nt = min(NT, tokens - t0);
    }
    float acc[NT];
    row_dots<F, NT>(w, row, g0, xt, nt, acc);
#pragma unroll
    for (int j = 0; j < NT; j++) {
        if (j < nt && lane == 0) yt[(i64)j * n + r] = acc[j] + (bias ? bias[r] : 0.0f);
    }
}

// out[t] = row ids[t] of the table, decoded to f32 (ids clamped into the table: the host
// checks ids it uploads; ids made on the device are in range by construction).
template <class F>
__device__ __forceinline__ void embed_body(const Weight& w, const int* __restrict__ ids,
                                           float* __restrict__ out, int vocab) {
    const int t = blockIdx.x;
    const i64 id = min(max(ids[t], 0), vocab - 1);
    const u8* row = w.codes + id * w.row_bytes;
    const i64 g0 = id * (w.k / w.group);
    float* o = out + (i64)t * w.k;
    for (int c = threadIdx.x; c < w.k / F::VALS; c += blockDim.x) {
        float v[F::VALS];
        F::decode(w, row, g0, c, v);
#pragma unroll
        for (int i = 0; i < F::VALS; i++) o[c * F::VALS + i] = v[i];
    }
}

// Rows offset, offset + step, ... (`rows` of them) of matrix expert0 + blockIdx.y of a stack
// (0 for a plain weight), decoded to f16 `[rows, k]` at out + blockIdx.y out_stride: the
// weight operand of a tensor-core product.
template <class F>
__device__ __forceinline__ void dequant_body(const Weight& w, i64 expert0, int rows, int step,
                                             int offset, u16* __restrict__ out, i64 out_stride) {
    const i64 expert = expert0 + blockIdx.y;
    out += blockIdx.y * out_stride;
    const int chunks = w.k / F::VALS;
    const i64 groups_per_row = w.k / w.group;
    GRID_STRIDE(i, (i64)rows * chunks) {
        const i64 r = i / chunks;
        const int c = (int)(i - r * chunks);
        const i64 src = offset + r * step;
        float v[F::VALS];
        F::decode(w, w.codes + expert * w.expert_bytes + src * w.row_bytes,
                  expert * w.expert_groups + src * groups_per_row, c, v);
        u16* o = out + r * w.k + (i64)c * F::VALS;
        if (F::VALS % 8 == 0) {  // chunks of 8k values start 16-byte aligned
#pragma unroll
            for (int j = 0; j < F::VALS / 8; j++) {
                const float* p = v + 8 * j;
                ((uint4*)o)[j] = make_uint4(f32x2_to_f16x2(p[0], p[1]), f32x2_to_f16x2(p[2], p[3]),
                                            f32x2_to_f16x2(p[4], p[5]), f32x2_to_f16x2(p[6], p[7]));
            }
        } else {
#pragma unroll
            for (int j = 0; j < F::VALS; j++) o[j] = f32_to_f16(v[j]);
        }
    }
}

// The same for the 16-byte-chunk formats, a thread per 8 values (one 16-byte store, reads
// of 4 or 8 code bytes side by side across a warp): F::decode8 gives values 8j .. 8j + 7.
template <class F>
__device__ __forceinline__ void dequant8_body(const Weight& w, i64 expert0, int rows, int step,
                                              int offset, u16* __restrict__ out, i64 out_stride) {
    const i64 expert = expert0 + blockIdx.y;
    out += blockIdx.y * out_stride;
    const i64 per_row = w.k / 8, groups_per_row = w.k / w.group;
    GRID_STRIDE(i, (i64)rows * per_row) {
        const i64 r = i / per_row, j = i - r * per_row;
        const i64 src = offset + r * step;
        float v[8];
        F::decode8(w, w.codes + expert * w.expert_bytes + src * w.row_bytes,
                   expert * w.expert_groups + src * groups_per_row, j, v);
        ((uint4*)(out + r * w.k))[j] =
            make_uint4(f32x2_to_f16x2(v[0], v[1]), f32x2_to_f16x2(v[2], v[3]),
                       f32x2_to_f16x2(v[4], v[5]), f32x2_to_f16x2(v[6], v[7]));
    }
}

#define DEQUANT8_KERNEL(NAME, F)                                                            \
    extern "C" __global__ void dequant8_f16_##NAME(Weight w, i64 expert0, int rows, int step, \
                                                   int offset, u16* out, i64 out_stride) {    \
        dequant8_body<F>(w, expert0, rows, step, offset, out, out_stride);                    \
    }


// Up to three products of one input in one launch (a layer's q, k and v): blocks
// first[i]..first[i + 1] compute product i exactly as its own launch would. Unused slots
// have no blocks.
struct LinearSet {
    Weight w[3];
    const float* bias[3];
    float* y[3];
    int n[3];
    int first[4];
    int pad;
};

template <class F, int NT>
__device__ __forceinline__ void linear_set_body(const LinearSet& s, const float* __restrict__ x,
                                                int tokens) {
    const int bx = blockIdx.x;
    const int i = (bx >= s.first[1]) + (bx >= s.first[2]);
    linear_body<F, NT>(s.w[i], x, s.bias[i], s.y[i], s.n[i], tokens, nullptr, 1, 0,
                       bx - s.first[i]);
}

#define WEIGHT_KERNELS(NAME, F)                                                                  \
    extern "C" __global__ void linear_##NAME##_1(Weight w, const float* x, const float* bias,  \
                                                 float* y, int n, int tokens, const int* ids,  \
                                                 int slots, int x_per_slot) {                  \
        linear_body<F, 1>(w, x, bias, y, n, tokens, ids, slots, x_per_slot, blockIdx.x);      \
    }                                                                                          \
    extern "C" __global__ void linear_##NAME##_8(Weight w, const float* x, const float* bias,  \
                                                 float* y, int n, int tokens, const int* ids,  \
                                                 int slots, int x_per_slot) {                  \
        linear_body<F, 8>(w, x, bias, y, n, tokens, ids, slots, x_per_slot, blockIdx.x);      \
    }                                                                                          \
    extern "C" __global__ void linear_set_##NAME##_1(LinearSet s, const float* x, int tokens) { \
        linear_set_body<F, 1>(s, x, tokens);                                                   \
    }                                                                                          \
    extern "C" __global__ void linear_set_##NAME##_8(LinearSet s, const float* x, int tokens) { \
        linear_set_body<F, 8>(s, x, tokens);                                                   \
    }                                                                                          \
    extern "C" __global__ void embed_##NAME(Weight w, const int* ids, float* out, int vocab) { \
        embed_body<F>(w, ids, out, vocab);                                                     \
    }                                                                                          \
    extern "C" __global__ void dequant_f16_##NAME(Weight w, i64 expert0, int rows, int step,   \
                                                  int offset, u16* out, i64 out_stride) {      \
        dequant_body<F>(w, expert0, rows, step, offset, out, out_stride);                      \
    }

typedef DenseF32<4> DenseF32x4;
typedef DenseF32<1> DenseF32x1;
typedef DenseHalf<4, false> DenseF16x4;
typedef DenseHalf<1, false> DenseF16x1;
typedef DenseHalf<4, true> DenseBF16x4;
typedef DenseHalf<1, true> DenseBF16x1;

WEIGHT_KERNELS(f32x4, DenseF32x4)
WEIGHT_KERNELS(f32x1, DenseF32x1)
WEIGHT_KERNELS(f16x4, DenseF16x4)
WEIGHT_KERNELS(f16x1, DenseF16x1)
WEIGHT_KERNELS(bf16x4, DenseBF16x4)
WEIGHT_KERNELS(bf16x1, DenseBF16x1)
WEIGHT_KERNELS(q4_0, Q4_0)
WEIGHT_KERNELS(q4_1, Q4_1)
WEIGHT_KERNELS(q8_0, Q8_0)
WEIGHT_KERNELS(affine8, Affine8)
WEIGHT_KERNELS(affine4, Affine4)
WEIGHT_KERNELS(affine_any, AffineAny)
WEIGHT_KERNELS(mxfp4, Mxfp4)
DEQUANT8_KERNEL(affine8, Affine8)
DEQUANT8_KERNEL(affine4, Affine4)
DEQUANT8_KERNEL(mxfp4, Mxfp4)

// ---------------------------------------------------------------------------------------
// Decode (one token) products for the 16-byte-chunk formats, built to stream weights at
// memory speed: a block computes R rows, each thread takes one 16-byte chunk of each (see
// matvec_body), and the chunk's activations are loaded and prepared once for all R rows. Codes become floats
// without the slow integer-to-float unit (magic-number and byte-permute tricks), and each
// group's scale and bias are applied once per chunk, not per value:
//     sum_i x_i (s q_i + b) = s sum_i x_i q_i + b sum_i x_i.

// A chunk's activations in f32 and their sum (for the affine biases).
template <int V>
struct __align__(16) ChunkF32 {
    float x[V];
    float sum;
    __device__ void load(const float* src) {
        const float4* x4 = (const float4*)src;
        sum = 0.0f;
#pragma unroll
        for (int i = 0; i < V / 4; i++) {
            const float4 v = x4[i];
            x[4 * i] = v.x;
            x[4 * i + 1] = v.y;
            x[4 * i + 2] = v.z;
            x[4 * i + 3] = v.w;
            sum += (v.x + v.y) + (v.z + v.w);
        }
    }
};

// Code i of a chunk of BITS-bit codes as a float: placed under the exponent of 2^23 (by a
// byte permute, or a mask for nibbles), then 2^23 subtracted; exact.
template <int BITS>
__device__ __forceinline__ float code_as_float(const u32* words, int i) {
    if (BITS == 8) {
        return __uint_as_float(__byte_perm(words[i >> 2], 0x4B000000u, 0x7440u | (i & 3))) -
               8388608.0f;
    }
    const u32 code = (words[i >> 3] >> (4 * (i & 7))) & 15u;
    return __uint_as_float(code | 0x4B000000u) - 8388608.0f;
}

// MLX affine 8- or 4-bit: 128 / BITS codes per chunk, all in one group (groups are at least
// 32 values).
template <int BITS>
struct MvAffine {
    static constexpr int VALS = 128 / BITS;
    typedef ChunkF32<VALS> Act;
    // A chunk's codes as floats with its group's scale and bias: decoded once, dotted with
    // every token's activations.
    struct Dec {
        float v[VALS];
        float s, b;
    };
    __device__ static void load_act(const float* x, Act& a) { a.load(x); }
    __device__ static Dec decode(const Weight& w, uint4 q, i64 g0, int c) {
        const u32 words[4] = {q.x, q.y, q.z, q.w};
        const i64 g = g0 + (i64)c * VALS / w.group;
        Dec d;
#pragma unroll
        for (int i = 0; i < VALS; i++) d.v[i] = code_as_float<BITS>(words, i);
        d.s = load_param(w.scales, w.param_kind, g);
        d.b = load_param(w.biases, w.param_kind, g);
        return d;
    }
    __device__ static float dot(const Dec& d, const Act& a) {
        float v = 0.0f;
#pragma unroll
        for (int i = 0; i < VALS; i++) v = fmaf(d.v[i], a.x[i], v);
        return fmaf(d.s, v, d.b * a.sum);
    }
    __device__ static float dot(const Weight& w, uint4 q, i64 g0, int c, const Act& a) {
        return dot(decode(w, q, g0, c), a);
    }
};
typedef MvAffine<8> MvAffine8;
typedef MvAffine<4> MvAffine4;

// Packed f16 pair arithmetic, in PTX (NVRTC has no cuda_fp16.h here).
__device__ __forceinline__ u32 hmul2(u32 a, u32 b) {
    u32 r;
    asm("{mul.rn.f16x2 %0, %1, %2;}" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
    u32 r;
    asm("{fma.rn.f16x2 %0, %1, %2, %3;}" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ float f16x2_sum(u32 h) {
    return f16_to_f32((u16)(h & 0xffff)) + f16_to_f32((u16)(h >> 16));
}

// Activations of one MXFP4 chunk as f16 pairs in the order the codes decode (below).
struct __align__(16) ChunkF16x32 {
    u32 x[16];
};

// MXFP4 with f16 products: each code's bits go straight into an f16 (sign to bit 15,
// exponent and mantissa bits to 11..9), which is the e2m1 value times 2^-14 (subnormal
// 0.5 included); one multiply by 2^14 makes it exact. Pairs are multiplied with f16
// activations and each word's eight products summed in f16, then the chunk in f32, as MLX
// runs gpt-oss with 16-bit activations. A word's nibbles pair as (0,2) (4,6) (1,3) (5,7).
struct MvMxfp4 {
    static constexpr int VALS = 32;
    typedef ChunkF16x32 Act;
    // A chunk's codes as exact f16 pairs in the activations' order, and its scale: decoded
    // once, dotted with every token's activations.
    struct Dec {
        u32 h[16];
        float scale;
    };
    __device__ static void load_act(const float* x, Act& a) {
        const float4* x4 = (const float4*)x;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float4 lo = x4[2 * j], hi = x4[2 * j + 1];  // values 8j .. 8j + 7
            a.x[4 * j] = f32x2_to_f16x2(lo.x, lo.z);
            a.x[4 * j + 1] = f32x2_to_f16x2(hi.x, hi.z);
            a.x[4 * j + 2] = f32x2_to_f16x2(lo.y, lo.w);
            a.x[4 * j + 3] = f32x2_to_f16x2(hi.y, hi.w);
        }
    }
    __device__ static Dec decode(const Weight& w, uint4 q, i64 g0, int c) {
        const u32 words[4] = {q.x, q.y, q.z, q.w};
        const u32 two14 = 0x74007400u;  // 2^14 in both halves
        Dec d;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const u32 wd = words[j];
            // One byte per code, sign in bit 7 and magnitude bits in 3..1: even codes, odd.
            const u32 even = ((wd & 0x07070707u) << 1) | ((wd << 4) & 0x80808080u);
            const u32 odd = ((wd >> 3) & 0x0E0E0E0Eu) | (wd & 0x80808080u);
            d.h[4 * j] = hmul2(__byte_perm(even, 0, 0x1404), two14);
            d.h[4 * j + 1] = hmul2(__byte_perm(even, 0, 0x3424), two14);
            d.h[4 * j + 2] = hmul2(__byte_perm(odd, 0, 0x1404), two14);
            d.h[4 * j + 3] = hmul2(__byte_perm(odd, 0, 0x3424), two14);
        }
        d.scale = e8m0_to_f32(((const u8*)w.scales)[g0 + c]);
        return d;
    }
    __device__ static float dot(const Dec& d, const Act& a) {
        float v = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            u32 acc = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) acc = hfma2(d.h[4 * j + i], a.x[4 * j + i], acc);
            v += f16x2_sum(acc);
        }
        return v * d.scale;
    }
    __device__ static float dot(const Weight& w, uint4 q, i64 g0, int c, const Act& a) {
        return dot(decode(w, q, g0, c), a);
    }
};

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

// A block computes R rows; its threads split the rows into 16-byte chunks (thread t takes
// chunks t, t + blockDim.x, ...: one or two each on the usual shapes), load that chunk of
// every row at once (R loads in flight per thread) and prepare its activations once for all
// R rows; then the block sums each row.
template <class F, int R>
__device__ __forceinline__ void matvec_body(const Weight& w, const float* __restrict__ x,
                                            const float* __restrict__ bias, float* __restrict__ y,
                                            int n, const int* __restrict__ ids, int slots,
                                            int x_per_slot) {
    const int r0 = blockIdx.x * R;
    const int k = w.k;
    const i64 groups_per_row = k / w.group;
    const u8* codes = w.codes;
    i64 g_expert = 0;
    const float* xt = x;
    float* yt = y;
    if (ids) {
        const int pair = blockIdx.y;
        const int e = ids[pair];
        codes += (i64)e * w.expert_bytes;
        g_expert = (i64)e * w.expert_groups;
        if (bias) bias += (i64)e * n;
        xt = x + (i64)(x_per_slot ? pair : pair / slots) * k;
        yt = y + (i64)pair * n;
    }
    float acc[1][R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[0][r] = 0.0f;
    const int chunks = k / F::VALS;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        uint4 q[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int row = min(r0 + r, n - 1);  // rows past n repeat the last; not stored
            q[r] = ((const uint4*)(codes + (i64)row * w.row_bytes))[c];
        }
        typename F::Act a;
        F::load_act(xt + c * F::VALS, a);
#pragma unroll
        for (int r = 0; r < R; r++)
            acc[0][r] += F::dot(w, q[r], g_expert + (i64)min(r0 + r, n - 1) * groups_per_row, c, a);
    }
    const float total = block_rows_sum<1, R>(acc);
    const int row = r0 + threadIdx.x;
    if (threadIdx.x < R && row < n) yt[row] = total + (bias ? bias[row] : 0.0f);
}

// ---------------------------------------------------------------------------------------
// A few tokens at once (a batch of decoding sequences): each 16-byte chunk of weights is
// decoded once and dotted with every token's activations. A row's sum is formed exactly as
// the one-token kernels form it (same chunks per thread, same products, same reductions),
// so a token gets the same bits alone or in a batch.

// Block x: rows r0..r0+R of y[t] = x[t] . w + bias for every token, NT at a time.
template <class F, int R, int NT>
__device__ __forceinline__ void matvec_tokens_body(const Weight& w, const float* __restrict__ x,
                                                   const float* __restrict__ bias,
                                                   float* __restrict__ y, int n, int tokens) {
    const int r0 = blockIdx.x * R;
    const int chunks = w.k / F::VALS;
    const i64 groups_per_row = w.k / w.group;
    for (int t0 = 0; t0 < tokens; t0 += NT) {
        const int m = min(NT, tokens - t0);
        float acc[NT][R];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int r = 0; r < R; r++) acc[j][r] = 0.0f;
        for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
            uint4 q[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const int row = min(r0 + r, n - 1);  // rows past n repeat the last; not stored
                q[r] = ((const uint4*)(w.codes + (i64)row * w.row_bytes))[c];
            }
            typename F::Dec d[R];
#pragma unroll
            for (int r = 0; r < R; r++)
                d[r] = F::decode(w, q[r], (i64)min(r0 + r, n - 1) * groups_per_row, c);
#pragma unroll
            for (int j = 0; j < NT; j++) {
                if (j < m) {
                    typename F::Act act;
                    F::load_act(x + (i64)(t0 + j) * w.k + c * F::VALS, act);
#pragma unroll
                    for (int r = 0; r < R; r++) acc[j][r] += F::dot(d[r], act);
                }
            }
        }
        const float total = block_rows_sum<NT, R>(acc);
        const int j = threadIdx.x / R, row = r0 + threadIdx.x % R;
        if (threadIdx.x < NT * R && j < m && row < n)
            y[(i64)(t0 + j) * n + row] = total + (bias ? bias[row] : 0.0f);
        __syncthreads();  // block_rows_sum's partials are reused by the next pass
    }
}

#define MATVEC_KERNEL(NAME, F, R)                                                           \
    extern "C" __global__ void matvec_##NAME##_r##R(Weight w, const float* x, const float* bias, \
                                                    float* y, int n, const int* ids, int slots, \
                                                    int x_per_slot) {                        \
        matvec_body<F, R>(w, x, bias, y, n, ids, slots, x_per_slot);                         \
    }

// Rows per block as the launcher offers them (see `matvec` in ops.rs).
MATVEC_KERNEL(affine8, MvAffine8, 1)
MATVEC_KERNEL(affine8, MvAffine8, 4)
MATVEC_KERNEL(affine4, MvAffine4, 1)
MATVEC_KERNEL(affine4, MvAffine4, 4)
MATVEC_KERNEL(mxfp4, MvMxfp4, 1)
MATVEC_KERNEL(mxfp4, MvMxfp4, 4)
MATVEC_KERNEL(mxfp4, MvMxfp4, 8)
MATVEC_KERNEL(mxfp4, MvMxfp4, 16)

#define MATVEC_TOKENS_KERNEL(NAME, F, R, NT)                                                   \
    extern "C" __global__ void matvec_tokens_##NAME##_r##R##_n##NT(                            \
        Weight w, const float* x, const float* bias, float* y, int n, int tokens) {            \
        matvec_tokens_body<F, R, NT>(w, x, bias, y, n, tokens);                                \
    }

MATVEC_TOKENS_KERNEL(mxfp4, MvMxfp4, 4, 8)
MATVEC_TOKENS_KERNEL(mxfp4, MvMxfp4, 1, 8)
MATVEC_TOKENS_KERNEL(affine8, MvAffine8, 4, 8)
MATVEC_TOKENS_KERNEL(affine8, MvAffine8, 1, 8)
MATVEC_TOKENS_KERNEL(affine4, MvAffine4, 2, 8)
MATVEC_TOKENS_KERNEL(affine4, MvAffine4, 1, 8)
