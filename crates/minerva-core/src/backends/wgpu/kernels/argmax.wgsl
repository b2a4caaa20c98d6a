// Each row's index of its largest value, the first of equal ones: a workgroup per row,
// each thread scanning a strided part, then a tree over the threads' bests.
// params: n (row length), x offset (values).

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<i32>;

const WG: u32 = 256u;
var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

// Whether candidate a (value, index) beats b: larger, or as large and earlier.
fn beats(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    return av > bv || (av == bv && ai < bi);
}

@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = p[0];
    let row = p[1] + (wid.x + wid.y * 65535u) * n;
    let t = lid.x;
    var v = x[row + min(t, n - 1u)];
    var i = min(t, n - 1u);
    for (var j = t + WG; j < n; j += WG) {
        if (x[row + j] > v) {
            v = x[row + j];
            i = j;
        }
    }
    best_value[t] = v;
    best_index[t] = i;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        if (t < half && beats(best_value[t + half], best_index[t + half], best_value[t], best_index[t])) {
            best_value[t] = best_value[t + half];
            best_index[t] = best_index[t + half];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        out[wid.x + wid.y * 65535u] = i32(best_index[0]);
    }
}
