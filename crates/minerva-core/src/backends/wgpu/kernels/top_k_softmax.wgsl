// Mixture-of-experts routing, a thread per token: the k highest scores (highest first,
// ties to the lower index), then a softmax over just those, summed in that order.
// params: experts, k, tokens, scores offset (values).

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn top_k_softmax(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x + gid.y * 65535u * WG;
    let experts = p[0];
    let k = p[1];
    if (t >= p[2]) { return; }
    let row = p[3] + t * experts;
    // Pick by pick: the best not yet picked, i.e. below the previous pick in the order.
    var prev_v = 0.0;
    var prev_i = 0u;
    for (var s = 0u; s < k; s++) {
        var bv = 0.0;
        var bi = experts;
        for (var e = 0u; e < experts; e++) {
            let v = scores[row + e];
            let after_prev = s == 0u || v < prev_v || (v == prev_v && e > prev_i);
            if (after_prev && (bi == experts || v > bv)) {
                bv = v;
                bi = e;
            }
        }
        ids[t * k + s] = i32(bi);
        weights[t * k + s] = bv;
        prev_v = bv;
        prev_i = bi;
    }
    let top = weights[t * k];
    var total = 0.0;
    for (var s = 0u; s < k; s++) {
        let e = exp(weights[t * k + s] - top);
        weights[t * k + s] = e;
        total += e;
    }
    for (var s = 0u; s < k; s++) {
        weights[t * k + s] = weights[t * k + s] / total;
    }
}
