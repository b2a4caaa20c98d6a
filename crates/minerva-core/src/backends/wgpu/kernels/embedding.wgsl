// Rows of an embedding table: out[t, j] = table[ids[t], j] as f32, one thread per value.
// params: d, tokens, vocab, table offset (bytes), ids offset (values).

@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

// The value's (token, column), or none past the end; the row's id, clamped into the table
// (ids made on the device are trusted, not checked, as on every GPU backend).
fn position(gid: vec3<u32>) -> vec3<u32> {
    let i = gid.x + gid.y * 65535u * WG;
    let d = p[0];
    let t = i / d;
    let row = u32(clamp(ids[p[4] + min(t, p[1] - 1u)], 0, i32(p[2]) - 1));
    return vec3<u32>(t, i % d, row);
}

@compute @workgroup_size(256)
fn embed_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let at = position(gid);
    if (at.x >= p[1]) { return; }
    let d = p[0];
    out[at.x * d + at.y] = bitcast<f32>(table[(p[3] >> 2u) + at.z * d + at.y]);
}

@compute @workgroup_size(256)
fn embed_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let at = position(gid);
    if (at.x >= p[1]) { return; }
    out[at.x * p[0] + at.y] = half_at(p[3] + (at.z * p[0] + at.y) * 2u);
}

@compute @workgroup_size(256)
fn embed_bf16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let at = position(gid);
    if (at.x >= p[1]) { return; }
    let b = p[3] + (at.z * p[0] + at.y) * 2u;
    out[at.x * p[0] + at.y] = bitcast<f32>((byte_at(b) | (byte_at(b + 1u) << 8u)) << 16u);
}

// A GGUF row of d values is d / 32 blocks of `size` bytes.
fn block_of(at: vec3<u32>, size: u32) -> u32 {
    return p[3] + (at.z * (p[0] / 32u) + at.y / 32u) * size;
}

@compute @workgroup_size(256)
fn embed_q4_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let at = position(gid);
    if (at.x >= p[1]) { return; }
    out[at.x * p[0] + at.y] = q4_0_value(block_of(at, 18u), at.y % 32u);
}

@compute @workgroup_size(256)
fn embed_q4_1(@builtin(global_invocation_id) gid: vec3<u32>) {
    let at = position(gid);
    if (at.x >= p[1]) { return; }
    out[at.x * p[0] + at.y] = q4_1_value(block_of(at, 20u), at.y % 32u);
}

@compute @workgroup_size(256)
fn embed_q8_0(@builtin(global_invocation_id) gid: vec3<u32>) {
    let at = position(gid);
    if (at.x >= p[1]) { return; }
    out[at.x * p[0] + at.y] = q8_0_value(block_of(at, 34u), at.y % 32u);
}
