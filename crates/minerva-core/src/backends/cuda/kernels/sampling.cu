// Picking tokens on the GPU, so only token ids cross to the host.

// Whether candidate (v, i) beats (best, best_i): larger value, ties to the lower index
// (as the CPU's argmax). NaN never wins.
__device__ __forceinline__ bool beats(float v, int i, float best, int best_i) {
    return v > best || (v == best && i < best_i);
}

// The block's best (value, index) of each thread's candidate; thread 0 gets it.
__device__ __forceinline__ void block_best(float& v, int& i) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, v, o);
        const int oi = __shfl_xor_sync(FULL_MASK, i, o);
        if (beats(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) {
            if (beats(sv[w], si[w], v, i)) {
                v = sv[w];
                i = si[w];
            }
        }
    }
}

// Stage one of a row argmax: block (c, r) finds the best of row r's slice c of `span`
// values and leaves it in part_v/part_i[r * gridDim.x + c].
extern "C" __global__ void argmax_partial(const float* __restrict__ x, float* part_v, int* part_i,
                                          int n, int span) {
    const int c = blockIdx.x, r = blockIdx.y;
    const float* row = x + (i64)r * n;
    const int lo = c * span, hi = min(n, lo + span);
    float v = -INFINITY;
    int i = 0x7fffffff;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        if (beats(row[j], j, v, i)) {
            v = row[j];
            i = j;
        }
    }
    block_best(v, i);
    if (threadIdx.x == 0) {
        part_v[(i64)r * gridDim.x + c] = v;
        part_i[(i64)r * gridDim.x + c] = i;
    }
}

// Stage two: block r merges row r's `parts` partial results into ids[r] (0 for a row with
// no comparable value, as the CPU's argmax).
extern "C" __global__ void argmax_final(const float* part_v, const int* part_i, int* ids,
                                        int parts) {
    const int r = blockIdx.x;
    float v = -INFINITY;
    int i = 0x7fffffff;
    for (int c = threadIdx.x; c < parts; c += blockDim.x) {
        const i64 at = (i64)r * parts + c;
        if (beats(part_v[at], part_i[at], v, i)) {
            v = part_v[at];
            i = part_i[at];
        }
    }
    block_best(v, i);
    if (threadIdx.x == 0) ids[r] = i == 0x7fffffff ? 0 : i;
}
