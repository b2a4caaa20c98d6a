// Shared helpers for every Minerva kernel. Compiled by NVRTC with no headers, so the half
// conversions are written in PTX and the integer types are spelled out here.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define FULL_MASK 0xffffffffu
// Index i over n elements with a grid-stride loop.
#define GRID_STRIDE(i, n) for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)
#define INFINITY __int_as_float(0x7f800000)

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("{cvt.f32.f16 %0, %1;}" : "=f"(f) : "h"(h));
    return f;
}

// Two floats as one packed f16 pair (lo in the low half).
__device__ __forceinline__ u32 f32x2_to_f16x2(float lo, float hi) {
    u32 r;
    asm("{cvt.rn.f16x2.f32 %0, %1, %2;}" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("{cvt.rn.f16.f32 %0, %1;}" : "=h"(h) : "f"(f));
    return h;
}

// 2^(e - 127) exactly; e = 0 is the subnormal 2^-127 and e = 255 is NaN (OCP e8m0).
__device__ __forceinline__ float e8m0_to_f32(u32 e) {
    if (e == 0) return __uint_as_float(0x00400000u);
    if (e == 255) return __uint_as_float(0x7fc00000u);
    return __uint_as_float(e << 23);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

// Maximum over a whole block (as block_sum; NaN skipped, -inf for none); every thread gets it.
__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[32];
    v = warp_max(v);
    __syncthreads();  // a previous call's readers are done with `partial`
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) m = fmaxf(m, partial[w]);
    return m;
}

// The storage type of per-group scales and biases (MLX affine: the weight's float type;
// MXFP4: e8m0 bytes).
enum ParamKind { P_F32 = 0, P_F16 = 1, P_BF16 = 2, P_E8M0 = 3 };

__device__ __forceinline__ float load_param(const void* p, int kind, i64 i) {
    switch (kind) {
        case P_F32: return ((const float*)p)[i];
        case P_F16: return f16_to_f32(((const u16*)p)[i]);
        case P_BF16: return bf16_to_f32(((const u16*)p)[i]);
        default: return e8m0_to_f32(((const u8*)p)[i]);
    }
}

// gpt-oss's SwiGLU of one gate/up pair: (clamp(u, +-limit) + 1) * g * sigmoid(alpha g) with
// g = min(gate, limit).
__device__ __forceinline__ float clamped_swiglu(float gate, float up, float alpha, float limit) {
    const float g = fminf(gate, limit);
    const float u = fminf(fmaxf(up, -limit), limit);
    return (u + 1.0f) * g / (1.0f + expf(-alpha * g));
}

// mma.m16n8k16 (f16 operands, f32 sums): lane = 4 g + t holds rows g and g + 8 of a and c,
// columns 2 t, 2 t + 1 (+ 8 for a) of each, and rows 2 t, 2 t + 1 (+ 8) of column g of b.
// c += a b for a 16x16 f16 tile a (4 registers), a 16x8 f16 tile b (2), f32 c (4).
__device__ __forceinline__ void mma_16816(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
