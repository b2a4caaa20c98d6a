// Rotary position embedding of x ([tokens, heads, head_dim]) into out, a thread per pair:
// the pair (2i, 2i + 1) (interleaved) or (i, i + half) (rotate half) turns by
// position * inv_freq[i], scaled by mscale. Dimensions past 2 * half are copied.
// params: tokens, heads, head_dim, half, half style (1) or interleaved (0), mscale bits,
// x offset, positions offset.

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<i32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    let heads = p[1];
    let head_dim = p[2];
    let half = p[3];
    // Each thread: one (token, head) and one dimension pair, or one copied dimension.
    let slots = head_dim - half;
    if (i >= p[0] * heads * slots) { return; }
    let row = i / slots;
    let s = i % slots;
    let base = row * head_dim;
    if (s >= half) {
        // Dimensions past the rotated ones (a partial rotary).
        let j = s + half;
        out[base + j] = x[p[6] + base + j];
        return;
    }
    var a = 2u * s;
    var b = 2u * s + 1u;
    if (p[4] == 1u) {
        a = s;
        b = s + half;
    }
    let token = row / heads;
    let angle = f32(positions[p[7] + token]) * inv_freq[s];
    let mscale = bitcast<f32>(p[5]);
    let c = cos(angle) * mscale;
    let sn = sin(angle) * mscale;
    let x0 = x[p[6] + base + a];
    let x1 = x[p[6] + base + b];
    out[base + a] = x0 * c - x1 * sn;
    out[base + b] = x0 * sn + x1 * c;
}
