// Weight formats as the product kernels read them in place: each format decodes one chunk
// of a row into registers. Shared by the built-in kernels (linear.cu) and the product
// kernels a compiled graph generates (backends/cuda/fused.rs), so both give the same bits.

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

// The 32 / BITS codes of one little-endian word of MLX affine BITS-bit codes, as s q + b.
template <int BITS>
__device__ __forceinline__ void affine_word(u32 q, float s, float b, float* v) {
#pragma unroll
    for (int i = 0; i < 32 / BITS; i++) v[i] = fmaf(s, (float)((q >> (BITS * i)) & ((1u << BITS) - 1)), b);
}

// MLX affine 4- or 8-bit: a 16-byte chunk holds 128 / BITS codes, all in one group (groups
// are 32, 64 or 128 values); value i sits in bits BITS i.. of the little-endian stream.
template <int BITS>
struct AffinePow2 {
    static constexpr int VALS = 128 / BITS;
    __device__ static void decode(const Weight& w, const u8* row, i64 g0, int c, float* v) {
        const uint4 q = ((const uint4*)row)[c];
        const i64 g = g0 + (i64)c * VALS / w.group;
        const float s = load_param(w.scales, w.param_kind, g);
        const float b = load_param(w.biases, w.param_kind, g);
        const u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; i++) affine_word<BITS>(words[i], s, b, v + i * (32 / BITS));
    }
    // Values 8j .. 8j + 7 of the row (for dequant8_body).
    __device__ static void decode8(const Weight& w, const u8* row, i64 g0, i64 j, float* v) {
        const i64 g = g0 + 8 * j / w.group;
        const float s = load_param(w.scales, w.param_kind, g);
        const float b = load_param(w.biases, w.param_kind, g);
        const u32* words = (const u32*)row + j * BITS / 4;
#pragma unroll
        for (int i = 0; i < BITS / 4; i++) affine_word<BITS>(words[i], s, b, v + i * (32 / BITS));
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

// The 8 e2m1 codes of one little-endian word times `half_scale` doubled: the magnitudes
// doubled are the bytes 0 1 2 3 4 6 8 12, picked with one byte permute; bit 3 is the sign.
__device__ __forceinline__ void mxfp4_word(u32 q, float half_scale, float* v) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const u32 code = (q >> (4 * i)) & 15;
        const float mag = (float)__byte_perm(0x03020100u, 0x0c080604u, code & 7);
        v[i] = __uint_as_float(__float_as_uint(mag * half_scale) | ((code & 8) << 28));
    }
}

// MXFP4: 32 e2m1 codes per chunk sharing one e8m0 scale.
struct Mxfp4 {
    static constexpr int VALS = 32;
    __device__ static void decode(const Weight& w, const u8* row, i64 g0, int c, float* v) {
        const uint4 q = ((const uint4*)row)[c];
        const float half_scale = 0.5f * e8m0_to_f32(((const u8*)w.scales)[g0 + c]);
        const u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; i++) mxfp4_word(words[i], half_scale, v + 8 * i);
    }
    // Values 8j .. 8j + 7 of the row (for dequant8_body).
    __device__ static void decode8(const Weight& w, const u8* row, i64 g0, i64 j, float* v) {
        const float half_scale = 0.5f * e8m0_to_f32(((const u8*)w.scales)[g0 + j / 4]);
        mxfp4_word(((const u32*)row)[j], half_scale, v);
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

// acc[j] = row `row` of w (its first group parameter g0) dotted with token j's activations
// (xt + j k) for j < nt, by one warp: lane l takes chunks l, l + 32, ..., and a warp
// reduction finishes each sum; every lane gets the sums.
template <class F, int NT>
__device__ __forceinline__ void row_dots(const Weight& w, const u8* row, i64 g0,
                                         const float* __restrict__ xt, int nt, float (&acc)[NT]) {
    const int lane = threadIdx.x & 31;
    const int k = w.k;
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
    for (int j = 0; j < NT; j++) acc[j] = warp_sum(acc[j]);
}
