// Moving f32 values around, a thread per value.

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;

const WG: u32 = 256u;

fn index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * WG;
}

// [.., b, c] -> [.., c, b]. params: values, b, c, x offset.
@compute @workgroup_size(256)
fn transpose_last2(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p[0]) { return; }
    let b = p[1];
    let c = p[2];
    let matrix = i / (b * c);
    let r = i % (b * c);
    // Output position r = (col, row) of the transposed matrix.
    let col = r / b;
    let row = r % b;
    a[i] = x[p[3] + matrix * b * c + row * c + col];
}

@group(0) @binding(3) var<storage, read_write> b_out: array<f32>;

// The even entries of the last axis to `a`, the odd ones to `b_out`. params: output values
// (each), x offset.
@compute @workgroup_size(256)
fn deinterleave(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= p[0]) { return; }
    a[i] = x[p[1] + 2u * i];
    b_out[i] = x[p[1] + 2u * i + 1u];
}
