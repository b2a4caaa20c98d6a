#!/usr/bin/env python3
"""`minerva convert` against mlx itself (mlx 0.32.4, mlx-lm 0.32.2, CPU):

1. mlx-lm loads the output. `minerva convert` of the tiny transformers gpt-oss
   (tests/fixtures/tiny-gpt-oss, f32) in the default MXFP4-Q8 arrangement, once with
   `--dtype bfloat16` and once as stored (f32), is loaded with `mlx_lm.utils.load_model` and
   run on the fixture's prompt:
   * bf16: its logits (parameters upcast to f32, as the fixture does) must equal mlx-lm's own
     conversion's (tests/fixtures/tiny-gpt-oss-mlx/logits.json "logits") to 1e-5 relative —
     the weights are byte-identical (crates/minerva-models/tests/convert.rs);
   * f32 (f32 scales and biases): compared with transformers' logits (tests/fixtures/
     tiny-gpt-oss) only as a sanity bound (0.3): the gap (~0.16; 0.17 for bf16) is the 8-bit
     quantization error, which this random model amplifies (LAYOUT.md); even the bf16 vs f32
     rounding of the scales alone moves its logits by 0.17. Its values are checked by part 2
     (every tensor equals mx.quantize's), so what mlx-lm computes from it is mlx's own.
   An experts-only MXFP4 conversion (lossless on this fixture) must match transformers with
   mlx-lm's YaRN rounding as the only difference (< 1e-2, see LAYOUT.md).
2. Bytes equal `mx.quantize`. Every quantized tensor `minerva convert` writes for
   `--q-bits 4`, `--q-bits 8` (affine, groups 32 and 64) and `--q-mode mxfp4`, from f32 and
   from `--dtype bfloat16`, is compared byte for byte with `mx.quantize` of the same source
   weight (the gpt-oss experts transposed and gate/up split as mlx-lm names them), on the
   tiny gpt-oss and on a llama-shaped checkpoint whose weights are stress groups (magnitudes
   2^-30..2^30, amax at and around 6*2^k, e2m1 ties, zero, -0.0 and tiny groups).

Run:  scripts/check-convert-mlx      (sets up the venv, builds minerva, runs this)
  or  "$(scripts/setup-mlx-env)" scripts/check_convert_mlx.py [--minerva target/release/minerva]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def run_convert(minerva: str, src: Path, out: Path, *args: str) -> None:
    cmd = [minerva, "convert", "--model", str(src), "--out", str(out), *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{r.stderr}")


def mlx_logits(path: Path, ids) -> np.ndarray:
    from mlx_lm.utils import load_model

    model, _ = load_model(path)
    model.update(tree_map(lambda p: p.astype(mx.float32) if mx.issubdtype(p.dtype, mx.floating) else p,
                          model.parameters()))
    out = model(mx.array(ids)[None])[0].astype(mx.float32)
    mx.eval(out)
    return np.array(out)


def check_mlx_loads(minerva: str, tmp: Path) -> None:
    hf = json.load(open(FIX / "tiny-gpt-oss" / "logits.json"))
    mlx_ref = json.load(open(FIX / "tiny-gpt-oss-mlx" / "logits.json"))
    ids = mlx_ref["input_ids"]
    assert ids == hf["input_ids"]
    want_mlx, want_hf = np.array(mlx_ref["logits"]), np.array(hf["logits"])
    src = FIX / "tiny-gpt-oss"
    cases = [("MXFP4-Q8, bf16", ["--dtype", "bfloat16"], want_mlx, 1e-5),
             ("MXFP4-Q8, f32", [], want_hf, 0.3),
             ("experts mxfp4, rest f32", ["--q-mode", "none", "--q-rule", "experts=mxfp4"], want_hf, 1e-2)]
    for i, (label, args, want, tol) in enumerate(cases):
        out = tmp / f"load{i}"
        run_convert(minerva, src, out, *args)
        got = mlx_logits(out, ids)
        err, err_hf = rel(got, want), rel(got, want_hf)
        ref = "mlx-lm's conversion" if want is want_mlx else "transformers"
        extra = "" if want is want_hf else f"; vs transformers {err_hf:.3f}"
        print(f"  mlx_lm.load + forward OK: {label}: vs {ref} {err:.2e} (bound {tol:g}){extra}")
        assert err <= tol, (label, err)


def expected_quantized(src_weights: dict, gpt_oss: bool) -> dict:
    """name -> float array that `minerva convert` quantizes for module `name`.weight."""
    out = {}
    for k, v in src_weights.items():
        if gpt_oss and k.endswith("experts.gate_up_proj"):
            base = k[: -len("gate_up_proj")]
            out[base + "gate_proj.weight"] = np.ascontiguousarray(np.swapaxes(v[..., 0::2], -1, -2))
            out[base + "up_proj.weight"] = np.ascontiguousarray(np.swapaxes(v[..., 1::2], -1, -2))
        elif gpt_oss and k.endswith("experts.down_proj"):
            out[k + ".weight"] = np.ascontiguousarray(np.swapaxes(v, -1, -2))
        elif k.endswith(".weight") and v.ndim >= 2:
            out[k] = v
    return out


def raw_tensors(path: Path) -> dict:
    """name -> (dtype, shape, bytes) of every tensor in a converted directory."""
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
            data = fh.read()
        for k, v in header.items():
            if k != "__metadata__":
                s, e = v["data_offsets"]
                out[k] = (v["dtype"], v["shape"], data[s:e])
    return out


def mx_bytes(a: mx.array) -> bytes:
    mx.eval(a)
    if a.dtype == mx.bfloat16:
        return np.array(a.view(mx.uint16)).tobytes()
    return np.array(a).tobytes()


def check_bytes(minerva: str, src: Path, gpt_oss: bool, tmp: Path, tag: str) -> int:
    weights = expected_quantized(load_file(str(src / "model.safetensors")), gpt_oss)
    modes = [("affine", 4, 64, ["--q-bits", "4"]), ("affine", 8, 64, ["--q-bits", "8"]),
             ("affine", 4, 32, ["--q-bits", "4", "--q-group-size", "32"]),
             ("affine", 8, 32, ["--q-bits", "8", "--q-group-size", "32"]),
             ("mxfp4", 4, 32, ["--q-mode", "mxfp4"])]
    compared = 0
    for mode, bits, group, args in modes:
        for bf16 in (False, True):
            name = "mxfp4" if mode == "mxfp4" else f"affine{bits}g{group}"
            out = tmp / f"{tag}-{name}{'-bf16' if bf16 else ''}"
            run_convert(minerva, src, out, *args, *(["--dtype", "bfloat16"] if bf16 else []))
            got = raw_tensors(out)
            cfg = json.load(open(out / "config.json"))["quantization"]
            n = 0
            for name, w in weights.items():
                path = name[: -len(".weight")]
                if got[name][0] != "U32":
                    assert w.shape[-1] % group != 0, f"{name} not quantized"
                    continue
                # gpt-oss routers are 8-bit group 64 whatever the global setting (mlx-lm's rule).
                q = cfg.get(path, {"group_size": group, "bits": bits, "mode": mode})
                x = mx.array(w)
                if bf16:
                    x = x.astype(mx.bfloat16)
                parts = mx.quantize(x, group_size=q["group_size"], bits=q["bits"],
                                    mode=q.get("mode", "affine"))
                for suffix, a in zip(["weight", "scales", "biases"], parts):
                    t = got[f"{path}.{suffix}"]
                    assert t[1] == list(a.shape), (out.name, path, suffix, t[1], a.shape)
                    assert t[2] == mx_bytes(a), f"{out.name}: {path}.{suffix} differs from mx.quantize"
                n += 1
            compared += n
            print(f"  {out.name}: {n} quantized modules byte-identical to mx.quantize")
    return compared


def stress_llama(dst: Path) -> None:
    """tests/fixtures/tiny-llama with every matrix replaced by mlx's hard cases."""
    rng = np.random.Generator(np.random.PCG64(11))
    w = load_file(str(FIX / "tiny-llama" / "model.safetensors"))
    for k, v in w.items():
        if v.ndim != 2:
            continue
        g = rng.standard_normal(v.size // 32 * 32).astype(np.float32).reshape(-1, 32)
        n = g.shape[0]
        g *= (2.0 ** rng.integers(-30, 30, (n, 1))).astype(np.float32)
        q = n // 4
        amax = (6 * 2.0 ** rng.integers(-30, 30, q)).astype(np.float32)
        for i, d in enumerate(rng.integers(-2, 3, q)):
            for _ in range(abs(int(d))):
                amax[i] = np.nextafter(amax[i], np.float32(np.inf if d > 0 else 0))
        g[:q, 1:] = np.clip(g[:q, 1:], -amax[:, None], amax[:, None])
        g[:q, 0] = amax
        g[q: 2 * q] = (rng.integers(-12, 13, (q, 32)) * 0.25).astype(np.float32)
        g[q: 2 * q, 0] = 6.0
        g[2 * q: 2 * q + 4] = 0.0
        g[2 * q + 4: 2 * q + 8] = -0.0
        g[2 * q + 8: 2 * q + 12, :16] = 1e-30
        w[k] = g.reshape(v.shape)
    dst.mkdir()
    save_file(w, str(dst / "model.safetensors"))
    shutil.copy(FIX / "tiny-llama" / "config.json", dst)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minerva", default=str(ROOT / "target" / "release" / "minerva"))
    args = ap.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="minerva-check-convert-") as t:
        tmp = Path(t)
        print("mlx-lm loads minerva convert output:")
        check_mlx_loads(args.minerva, tmp)
        print("minerva convert bytes vs mx.quantize:")
        n = check_bytes(args.minerva, FIX / "tiny-gpt-oss", True, tmp, "gpt-oss")
        stress_llama(tmp / "stress-llama")
        n += check_bytes(args.minerva, tmp / "stress-llama", False, tmp, "stress-llama")
    print(f"OK: {n} quantized modules (codes, scales, biases) byte-identical to mx.quantize; mlx-lm loads and runs the "
          f"output ({time.time() - start:.1f} s; mlx {mx.__version__})")


if __name__ == "__main__":
    main()
