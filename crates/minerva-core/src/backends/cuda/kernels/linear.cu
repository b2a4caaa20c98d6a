// Matrix-vector products that read packed weights in place: each warp owns one weight row,
// each lane decodes 16-byte chunks (or one GGUF block) into registers and dots them with the
// f32 activations, and a warp reduction finishes the row. Decode (one token) reads every
// weight byte once; a few tokens at a time share each decoded chunk.

// A `[rows, k]` weight, or a stack of them (`[experts, rows, k]`) for gathered products.
struct Weight {
    const u8* codes;
    const void* scales;  // per-group parameters (MLX affine, MXFP4), else null
    const void* biases;  // per-group biases (MLX affine), else null
    i64 row_bytes;       // bytes of codes per row
    i64 expert_bytes;    // bytes of codes per stacked matrix
    i64 expert_groups;   // group parameters per stacked matrix
    int k;               // values per row
    int param_kind;      // ParamKind of scales and biases
    int bits;            // MLX affine code width
    int group;           // values per group parameter (1 where there are none)
};

// Each format decodes chunk `c` of a row (VALS values) into `v`; `g0` indexes the row's
// first group parameter.
// Dense rows, V values per chunk (4 where k allows, else 1).
template <int V>
struct DenseF32 {
    static constexpr int VALS = V;
    __device__ static void decode(const Weight&, const u8* row, i64, int c, float* v) {
        const float* p = (const float*)row + V * c;
#pragma unroll
        for (int i = 0; i < V; i++) v[i] = p[i];
    }
};

template <int V, bool BRAIN>
struct DenseHalf {
    static constexpr int VALS = V;
    __device__ static void decode(const Weight&, const u8* row, i64, int c, float* v) {
        const u16* p = (const u16*)row + V * c;
#pragma unroll
        for (int i = 0; i < V; i++) v[i] = BRAIN ? bf16_to_f32(p[i]) : f16_to_f32(p[i]);
    }
};

// GGUF Q4_0 (18-byte blocks: f16 d, then 16 bytes of nibbles; x = d (q - 8)) and Q4_1
// (20-byte blocks: f16 d and m, then the nibbles; x = d q + m). Low nibbles are values 0..15.
template <bool HAS_MIN>
struct Q4 {
    static constexpr int VALS = 32;
    static constexpr int HEAD = HAS_MIN ? 2 : 1;  // u16 words before the nibbles
    __device__ static float value(float d, float m, u32 q) {
        return HAS_MIN ? fmaf(d, (float)q, m) : d * ((float)q - 8.0f);
    }
    __device__ static void decode(const Weight&, const u8* row, i64, int c, float* v) {
        const u16* b = (const u16*)(row + 2 * (HEAD + 8) * (i64)c);
        const float d = f16_to_f32(b[0]);
        const float m = HAS_MIN ? f16_to_f32(b[1]) : 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const u32 q = b[HEAD + i];
            v[2 * i] = value(d, m, q & 15);
            v[2 * i + 1] = value(d, m, (q >> 8) & 15);
            v[2 * i + 16] = value(d, m, (q >> 4) & 15);
            v[2 * i + 17] = value(d, m, (q >> 12) & 15);
        }
    }
};
typedef Q4<false> Q4_0;
typedef Q4<true> Q4_1;

// GGUF Q8_0: 34-byte blocks, f16 d, 32 signed bytes.
struct Q8_0 {
    static constexpr int VALS = 32;
    __device__ static void decode(const Weight&, const u8* row, i64, int c, float* v) {
        const u16* b = (const u16*)(row + 34 * (i64)c);
        const float d = f16_to_f32(b[0]);
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const u32 q = b[1 + i];
            v[2 * i] = d * (float)(signed char)(q & 0xff);
            v[2 * i + 1] = d * (float)(signed char)(q >> 8);
        }
    }
};

// MLX affine 4- or 8-bit: a 16-byte chunk holds 128 / BITS codes, all in one group (groups
// are 32, 64 or 128 values); value i sits in bits BITS i.. of the little-endian stream.
template <int BITS>
struct AffinePow2 {
    static constexpr int VALS = 128 / BITS;
    __device__ static void decode(const Weight& w, const u8* row, i64 g0, int c, float* v) {
        constexpr int PER_WORD = 32 / BITS;
        constexpr u32 MASK = (1u << BITS) - 1;
        const uint4 q = ((const uint4*)row)[c];
        const i64 g = g0 + (i64)c * VALS / w.group;
        const float s = load_param(w.scales, w.param_kind, g);
        const float b = load_param(w.biases, w.param_kind, g);
        const u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < VALS; i++)
            v[i] = fmaf(s, (float)((words[i / PER_WORD] >> (BITS * (i % PER_WORD))) & MASK), b);
    }
};
typedef AffinePow2<8> Affine8;
typedef AffinePow2<4> Affine4;

// MLX affine of any width (2, 3, 5, 6 bits): 8 codes are `bits` whole bytes.
struct AffineAny {
    static constexpr int VALS = 8;
    __device__ static void decode(const Weight& w, const u8* row, i64 g0, int c, float* v) {
        const u8* p = row + (i64)c * w.bits;
        u64 bitsv = 0;
        for (int i = 0; i < w.bits; i++) bitsv |= (u64)p[i] << (8 * i);
        const i64 g = g0 + (i64)c * VALS / w.group;
        const float s = load_param(w.scales, w.param_kind, g);
        const float b = load_param(w.biases, w.param_kind, g);
        const u64 mask = (1ull << w.bits) - 1;
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = fmaf(s, (float)((bitsv >> (i * w.bits)) & mask), b);
    }
};

// MXFP4: 32 e2m1 codes per chunk sharing one e8m0 scale. The magnitudes doubled are the
// bytes 0 1 2 3 4 6 8 12, picked with one byte permute; bit 3 of a code is the sign.
struct Mxfp4 {
    static constexpr int VALS = 32;
    __device__ static void decode(const Weight& w, const u8* row, i64 g0, int c, float* v) {
        const uint4 q = ((const uint4*)row)[c];
        const float half_scale = 0.5f * e8m0_to_f32(((const u8*)w.scales)[g0 + c]);
        const u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 32; i++) {
            const u32 code = (words[i >> 3] >> (4 * (i & 7))) & 15;
            const float mag = (float)__byte_perm(0x03020100u, 0x0c080604u, code & 7);
            v[i] = __uint_as_float(__float_as_uint(mag * half_scale) | ((code & 8) << 28));
        }
    }
};

__device__ __forceinline__ float dot_chunk(const float* v, const float* x, int vals) {
    float s = 0.0f;
    if ((vals & 3) == 0) {
        const float4* x4 = (const float4*)x;
        for (int i = 0; i < vals / 4; i++) {
            const float4 xv = x4[i];
            s = fmaf(v[4 * i], xv.x, s);
            s = fmaf(v[4 * i + 1], xv.y, s);
            s = fmaf(v[4 * i + 2], xv.z, s);
            s = fmaf(v[4 * i + 3], xv.w, s);
        }
    } else {
        for (int i = 0; i < vals; i++) s = fmaf(v[i], x[i], s);
    }
    return s;
}

// y[t, r] = x[t] . w[r] + bias[r] for NT tokens per block (grid.y tiles the tokens), or,
// with `ids` set, the gathered form: block y is a (token, slot) pair whose weight is the
// stacked matrix ids[pair], with the input row per pair (x_per_slot) or per token.
template <class F, int NT>
__device__ __forceinline__ void linear_body(const Weight& w, const float* __restrict__ x,
                                            const float* __restrict__ bias, float* __restrict__ y,
                                            int n, int tokens, const int* __restrict__ ids,
                                            int slots, int x_per_slot) {
    const int lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
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
#pragma unroll
    for (int j = 0; j < NT; j++) acc[j] = 0.0f;
    const int chunks = k / F::VALS;
    for (int c = lane; c < chunks; c += 32) {
        float v[F::VALS];
        F::decode(w, row, g0, c, v);
#pragma unroll
        for (int j = 0; j < NT; j++) {
            if (j < nt) acc[j] += dot_chunk(v, xt + (i64)j * k + c * F::VALS, F::VALS);
        }
    }
#pragma unroll
    for (int j = 0; j < NT; j++) {
        if (j < nt) {
            const float s = warp_sum(acc[j]);
            if (lane == 0) yt[(i64)j * n + r] = s + (bias ? bias[r] : 0.0f);
        }
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

#define WEIGHT_KERNELS(NAME, F)                                                                  \
    extern "C" __global__ void linear_##NAME##_1(Weight w, const float* x, const float* bias,  \
                                                 float* y, int n, int tokens, const int* ids,  \
                                                 int slots, int x_per_slot) {                  \
        linear_body<F, 1>(w, x, bias, y, n, tokens, ids, slots, x_per_slot);                  \
    }                                                                                          \
    extern "C" __global__ void linear_##NAME##_8(Weight w, const float* x, const float* bias,  \
                                                 float* y, int n, int tokens, const int* ids,  \
                                                 int slots, int x_per_slot) {                  \
        linear_body<F, 8>(w, x, bias, y, n, tokens, ids, slots, x_per_slot);                  \
    }                                                                                          \
    extern "C" __global__ void embed_##NAME(Weight w, const int* ids, float* out, int vocab) { \
        embed_body<F>(w, ids, out, vocab);                                                     \
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
