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

// ---------------------------------------------------------------------------------------
// Sampling with temperature, top-k, top-p and min-p (the rules are in
// backends/cpu/sampling.rs, which this mirrors): the kept tokens are those whose order key
// is at least one threshold, found by selection with counts (top-k) and fixed-point
// probability mass (top-p); the pick among them is a Gumbel-max draw.

// An order-preserving u32 of a float (larger float, larger key); NaN is the key of -inf.
__device__ __forceinline__ u32 order_key(float v) {
    if (v != v) v = -INFINITY;
    const u32 u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// exp((l - m) / t) as a 32.32 fixed-point number, summed exactly in any order.
__device__ __forceinline__ u64 fixed_mass(float l, float m, float t) {
    if (l != l) return 0;
    return __float2ull_rn(expf((l - m) / t) * 4294967296.0f);
}

// A uniform draw in (0, 1) from (seed, counter, token): splitmix64 of their mix.
__device__ __forceinline__ float draw_uniform(u64 seed, u32 counter, u32 i) {
    u64 x = seed + (u64)counter * 0xD1B54A32D192ED03ull + (u64)i * 0x9E3779B97F4A7C15ull;
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return ((float)(x >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

// The coarse bin of a logit: eighths of a nat below the maximum, the last bin holding all
// the rest (monotone in the logit, so bins never reorder keys).
#define SAMPLE_BINS 256
__device__ __forceinline__ int coarse_bin(float l, float m, float t) {
    const float b = (m - l) / t * 8.0f;
    return b < (float)(SAMPLE_BINS - 1) ? (int)b : SAMPLE_BINS - 1;  // NaN: last bin
}

// The threshold key where the running total (of counts, or of fixed-point masses), taken
// from the largest key down with equal keys together, first reaches `target`, among the
// row's values with key >= floor_key. A coarse pass over bins, then four exact passes over
// the key's bytes among the values of the chosen bin. The whole block calls it.
template <bool MASS>
__device__ u32 select_threshold(const float* row, int n, float m, float t, u32 floor_key, u64 target) {
    __shared__ u64 hist[SAMPLE_BINS];
    __shared__ u32 chosen;
    __shared__ u64 above_s;
    u64 above = 0;
    int bin = 0;
    u32 prefix = 0, mask = 0;
    for (int round = 0; round < 5; round++) {
        for (int b = threadIdx.x; b < SAMPLE_BINS; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        const int shift = 32 - 8 * round;  // digit of exact round r: bits shift .. shift + 7
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float l = row[i];
            const u32 key = order_key(l);
            if (key < floor_key) continue;
            const int cb = coarse_bin(l, m, t);
            int digit;
            if (round == 0) {
                digit = cb;
            } else {
                if (cb != bin || (key & mask) != prefix) continue;
                digit = 255 - (int)((key >> shift) & 0xff);  // largest digit first
            }
            atomicAdd((unsigned long long*)&hist[digit], MASS ? (unsigned long long)fixed_mass(l, m, t) : 1ull);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            // The target is at most the total counted (top-k is below the values counted;
            // top-p's target is a fraction of the mass summed under the same filter), so
            // some digit reaches it; `cum` is the total above that digit.
            u64 cum = above;
            int pick = 0;
            for (; pick < SAMPLE_BINS - 1; pick++) {
                if (hist[pick] != 0 && cum + hist[pick] >= target) break;
                cum += hist[pick];
            }
            chosen = pick;
            above_s = cum;
        }
        __syncthreads();
        above = above_s;
        if (round == 0) {
            bin = chosen;
        } else {
            const int s = 32 - 8 * round;
            prefix |= (u32)(255 - chosen) << s;
            mask |= 0xffu << s;
        }
        __syncthreads();
    }
    return prefix;
}

// Block r: the thresholds of row r. settings[r] = {temperature, top_k, top_p, min_p};
// writes bounds[r] = {max logit bits, threshold key}.
extern "C" __global__ void sample_bounds(const float* __restrict__ x, const float* __restrict__ settings,
                                         u32* __restrict__ bounds, int n) {
    const int r = blockIdx.x;
    const float* row = x + (i64)r * n;
    const float t = settings[4 * r], top_p = settings[4 * r + 2];
    const int top_k = (int)settings[4 * r + 1];
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);  // fmaxf skips NaN
    m = block_max(m);
    u32 floor_key = 0;
    if (m != -INFINITY && top_k > 0 && top_k < n) floor_key = select_threshold<false>(row, n, m, t, 0, (u64)top_k);
    if (m != -INFINITY && top_p < 1.0f) {
        __shared__ unsigned long long total;
        if (threadIdx.x == 0) total = 0;
        __syncthreads();
        u64 z = 0;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            if (order_key(row[i]) >= floor_key) z += fixed_mass(row[i], m, t);
        atomicAdd(&total, (unsigned long long)z);
        __syncthreads();
        const u64 target = (u64)ceil((double)top_p * (double)total);
        const u32 p_key = select_threshold<true>(row, n, m, t, floor_key, target > 0 ? target : 1);
        floor_key = max(floor_key, p_key);
    }
    if (threadIdx.x == 0) {
        bounds[2 * r] = __float_as_uint(m);
        bounds[2 * r + 1] = floor_key;
    }
}

// Stage one of the draw, as argmax_partial over Gumbel-perturbed scores l / t + g of the
// kept values (draws[r] = {seed lo, seed hi, counter}).
extern "C" __global__ void sample_partial(const float* __restrict__ x, const float* __restrict__ settings,
                                          const u32* __restrict__ bounds, const u32* __restrict__ draws,
                                          float* part_v, int* part_i, int n, int span) {
    const int c = blockIdx.x, r = blockIdx.y;
    const float* row = x + (i64)r * n;
    const float t = settings[4 * r], min_p = settings[4 * r + 3];
    const float m = __uint_as_float(bounds[2 * r]);
    const u32 floor_key = bounds[2 * r + 1];
    const u64 seed = (u64)draws[3 * r] | ((u64)draws[3 * r + 1] << 32);
    const u32 counter = draws[3 * r + 2];
    const int lo = c * span, hi = min(n, lo + span);
    float v = -INFINITY;
    int i = 0x7fffffff;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        const float l = row[j];
        if (l != l || order_key(l) < floor_key) continue;
        if (min_p > 0.0f && expf((l - m) / t) < min_p) continue;
        const float s = l / t - logf(-logf(draw_uniform(seed, counter, (u32)j)));
        if (beats(s, j, v, i)) {
            v = s;
            i = j;
        }
    }
    block_best(v, i);
    if (threadIdx.x == 0) {
        part_v[(i64)r * gridDim.x + c] = v;
        part_i[(i64)r * gridDim.x + c] = i;
    }
}
