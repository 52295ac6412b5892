#!/usr/bin/python3
"""PyTorch bf16 peer for bench/peers: Qwen3-VL at a checkpoint's shape, eager, on the CPU.

The model is vigil's plain-PyTorch Qwen3-VL (tools/demo/qwen3vl_tiny.py, which matches
transformers' Qwen3VLForConditionalGeneration: eager attention with repeated KV heads, softmax and
RMSNorm in float32), built directly in bfloat16 and filled tensor by tensor from the checkpoint's
model.safetensors (so memory holds one bf16 copy, never a float32 one). transformers itself is not
a Debian package; this is the same eager code path.

Measured (median of the timed repetitions, after warm-up):
- vision: model.model.visual on one 448x448 frame pair (784 patches of 1536 values, grid 1x28x28);
- prefill: PREFILL random token ids through the text model, filling a preallocated bf16 KV cache,
  lm_head on the last position only;
- decode: DECODE greedy steps after that prefill, one token at a time through the KV cache
  (the same q/k/v/o projections, q/k RMSNorm, interleaved MRoPE and MLP modules as the uncached
  forward; --check shows both give the same logits);
- peak RSS after loading (VmHWM, reset through /proc/self/clear_refs once the weights are in).

Usage: bench_torch.py MODEL_DIR --threads T [--quick] [--out FILE.json]
       bench_torch.py --check CONFIG.json      cached vs uncached logits on a small config (f32)
Environment: VIGIL_DEMO_DIR = the repository's tools/demo (default: found from this file).
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch

DEMO = os.environ.get("VIGIL_DEMO_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "demo")
sys.path.insert(0, DEMO)
import qwen3vl_tiny as q  # noqa: E402


def load_bf16(directory):
    """Builds the model in bf16 and copies the checkpoint in one tensor at a time (mapped file)."""
    cfg = q.Qwen3VLConfig.from_file(os.path.join(directory, "config.json"))
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = q.Qwen3VL(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    path = os.path.join(directory, "model.safetensors")
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    header.pop("__metadata__", None)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + hlen)
    params = dict(model.named_parameters())
    if cfg.tie_word_embeddings:
        header.pop("lm_head.weight", None)
    for name, info in header.items():
        if name not in params:
            raise KeyError(f"unexpected tensor {name}")
        p = params.pop(name)
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        if tuple(p.shape) != shape:
            raise ValueError(f"{name}: shape {shape} vs model {tuple(p.shape)}")
        if info["dtype"] == "BF16":
            src = torch.from_numpy(np.array(raw[b:e]).view(np.int16)).view(torch.bfloat16)
        elif info["dtype"] == "F32":
            src = torch.from_numpy(np.array(raw[b:e]).view(np.float32)).to(torch.bfloat16)
        else:
            raise ValueError(f"{name}: dtype {info['dtype']}")
        with torch.no_grad():
            p.copy_(src.reshape(shape))
    if params:
        raise KeyError(f"checkpoint lacks {sorted(params)[:8]}")
    del raw
    return model.eval()


class Cache:
    """Preallocated KV cache per layer: [1, n_kv_heads, max_len, head_dim]."""

    def __init__(self, c, max_len, dtype):
        shape = (1, c.num_key_value_heads, max_len, c.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype) for _ in range(c.num_hidden_layers)]
        self.v = [torch.zeros(shape, dtype=dtype) for _ in range(c.num_hidden_layers)]
        self.n = 0


def attn_cached(a, x, cos, sin, k_cache, v_cache, start):
    """TextAttention.forward with the new K/V written at [start, start+S) and attention over
    [0, start+S), causal inside the new block."""
    B, S, _ = x.shape
    qh = a.q_norm(a.q_proj(x).view(B, S, a.hq, a.hd)).transpose(1, 2)
    kh = a.k_norm(a.k_proj(x).view(B, S, a.hkv, a.hd)).transpose(1, 2)
    vh = a.v_proj(x).view(B, S, a.hkv, a.hd).transpose(1, 2)
    c, s = cos[:, None].to(qh.dtype), sin[:, None].to(qh.dtype)
    qh = qh * c + q.rotate_half(qh) * s
    kh = kh * c + q.rotate_half(kh) * s
    end = start + S
    k_cache[:, :, start:end] = kh
    v_cache[:, :, start:end] = vh
    mask = None
    if S > 1:
        m = torch.ones(S, end, dtype=torch.bool).tril(diagonal=start)
        mask = torch.zeros(m.shape, dtype=x.dtype).masked_fill(~m, torch.finfo(x.dtype).min)
        mask = mask[None, None]
    o = q.attention(qh, k_cache[:, :, :end], v_cache[:, :, :end], a.hd ** -0.5, mask)
    return a.o_proj(o.transpose(1, 2).reshape(B, S, a.hq * a.hd))


def forward_cached(model, ids, cache):
    """Text-only forward of ids [1, S] at positions cache.n.. ; returns the last position's logits."""
    tm = model.model.language_model
    S = ids.shape[1]
    pos = torch.arange(cache.n, cache.n + S)[None].expand(3, 1, S)
    cos, sin = tm.rope(pos)
    x = tm.embed_tokens(ids)
    for li, layer in enumerate(tm.layers):
        x = x + attn_cached(layer.self_attn, layer.input_layernorm(x), cos, sin, cache.k[li],
                            cache.v[li], cache.n)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    cache.n += S
    h = tm.norm(x[:, -1:])
    return torch.nn.functional.linear(h, model.lm_weight())[0, -1]


def check(config_path):
    """Cached prefill + 3 decode steps against the uncached forward, float32, random weights."""
    cfg = q.Qwen3VLConfig.from_file(config_path)
    torch.manual_seed(0)
    model = q.Qwen3VL(cfg).eval()
    model.init_weights(seed=1)
    ids = torch.randint(0, cfg.vocab_size - 300, (1, 40))
    worst = 0.0
    with torch.inference_mode():
        cache = Cache(cfg, 64, torch.float32)
        cached = [forward_cached(model, ids[:, :37], cache)]
        for t in range(37, 40):
            cached.append(forward_cached(model, ids[:, t:t + 1], cache))
        for j, n in enumerate(range(37, 41)):
            sub = ids[:, :n]
            pos = torch.arange(n)[None].expand(3, 1, n)
            full = model(sub, pos)[0, -1]
            worst = max(worst, float((full - cached[j]).abs().max() / full.abs().max()))
    print(f"kv-cache check: max |cached - uncached| / max|logit| = {worst:.2e} over 4 positions")
    return 0 if worst < 1e-4 else 1


def rss_hwm_gib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / (1 << 20)
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prefill", type=int, default=1024)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--out")
    ap.add_argument("--check")
    a = ap.parse_args()
    if a.check:
        return check(a.check)
    if not a.model:
        ap.error("MODEL_DIR is required")
    torch.set_num_threads(a.threads)
    t0 = time.time()
    model = load_bf16(a.model)
    load_s = time.time() - t0
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    c = model.config
    res = {"engine": "pytorch-bf16", "torch": torch.__version__, "threads": a.threads,
           "load_s": round(load_s, 1), "mkldnn_bf16": bool(torch.backends.mkldnn.is_available())}
    reps = 2 if a.quick else 5
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        pv = (torch.rand(784, 1536, generator=g) - 0.5).to(torch.bfloat16)
        times = []
        for r in range(reps + 1):
            ts = time.perf_counter()
            model.model.visual(pv, [(1, 28, 28)])
            if r > 0:
                times.append(time.perf_counter() - ts)
        res["vision_s"] = statistics.median(times)
        res["vision_runs_s"] = times
        max_len = a.prefill + a.decode + 8
        cache = Cache(c, 64 + 8, torch.bfloat16)  # warm-up: 64-token prefill, 4 steps
        tok = int(forward_cached(model, torch.randint(0, c.vocab_size, (1, 64), generator=g),
                                 cache).argmax())
        for _ in range(4):
            tok = int(forward_cached(model, torch.tensor([[tok]]), cache).argmax())
        pre, dec = [], []
        for r in range(1 if a.quick else 3):
            cache = Cache(c, max_len, torch.bfloat16)
            ids = torch.randint(0, c.vocab_size, (1, a.prefill), generator=g)
            ts = time.perf_counter()
            tok = int(forward_cached(model, ids, cache).argmax())
            pre.append(a.prefill / (time.perf_counter() - ts))
            ts = time.perf_counter()
            for _ in range(a.decode):
                tok = int(forward_cached(model, torch.tensor([[tok]]), cache).argmax())
            dec.append(a.decode / (time.perf_counter() - ts))
            del cache
        res["prefill_tok_s"] = statistics.median(pre)
        res["decode_tok_s"] = statistics.median(dec)
        res["prefill_runs"] = pre
        res["decode_runs"] = dec
    res["peak_rss_gib"] = round(rss_hwm_gib(), 2)
    out = json.dumps(res, indent=1)
    print(out)
    if a.out:
        with open(a.out, "w") as f:
            f.write(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
