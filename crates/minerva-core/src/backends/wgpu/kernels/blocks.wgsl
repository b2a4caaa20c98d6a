// Reading packed weights: the module using these declares `table: array<u32>`, the bytes
// of a weight as little-endian words. GGUF blocks hold 32 values: Q4_0 is an f16 scale and
// 16 bytes of nibbles (value = d * q - 8 d), Q4_1 an f16 scale, an f16 minimum and 16 bytes
// (d * q + m), Q8_0 an f16 scale and 32 signed bytes (d * q). Nibble j of a block holds
// values j (low half) and j + 16 (high half).

fn byte_at(i: u32) -> u32 {
    return (table[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn half_at(i: u32) -> f32 {
    let bits = byte_at(i) | (byte_at(i + 1u) << 8u);
    return unpack2x16float(bits).x;
}

// Value `j` (0..32) of the GGUF block at byte `b`.
fn q4_0_value(b: u32, j: u32) -> f32 {
    let d = half_at(b);
    let q = (byte_at(b + 2u + (j & 15u)) >> ((j >> 4u) * 4u)) & 15u;
    return d * f32(q) + -8.0 * d;
}

fn q4_1_value(b: u32, j: u32) -> f32 {
    let q = (byte_at(b + 4u + (j & 15u)) >> ((j >> 4u) * 4u)) & 15u;
    return half_at(b) * f32(q) + half_at(b + 2u);
}

fn q8_0_value(b: u32, j: u32) -> f32 {
    let q = i32(byte_at(b + 2u + j) << 24u) >> 24u;
    return half_at(b) * f32(q);
}
