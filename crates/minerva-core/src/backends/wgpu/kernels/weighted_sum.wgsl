// The experts' outputs mixed: out[t, j] = sum over s of w[t, s] * y[t, s, j], from s = 0,
// a thread per output value. params: tokens, slots, d, y offset, w offset (values).

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn weighted_sum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    let slots = p[1];
    let d = p[2];
    if (i >= p[0] * d) { return; }
    let t = i / d;
    let j = i % d;
    var acc = 0.0;
    for (var s = 0u; s < slots; s++) {
        acc += w[p[4] + t * slots + s] * y[p[3] + (t * slots + s) * d + j];
    }
    out[i] = acc;
}
