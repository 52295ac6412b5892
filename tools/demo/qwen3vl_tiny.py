"""Qwen3-VL in plain PyTorch (Debian's torch 1.13; offline tooling only), at any size.

A clean re-implementation of Hugging Face transformers' Qwen3VLForConditionalGeneration as described
in docs/qwen3vl.md (§3 vision, §4 text, §5 MRoPE). Module names equal the checkpoint keys
of the Hugging Face layout, so `state_dict()` is the safetensors content (minus lm_head.weight when
the embeddings are tied). tools/demo/check_golden.py proves it against transformers' own outputs.

Vision tower (docs/qwen3vl.md §3): patch embedding (the Conv3d as a linear map on the 1536-vectors), the learned
position table bilinearly resampled from its sqrt(num_position_embeddings)^2 grid with a
corner-aligned float32 linspace, 2-D rotary embedding on q/k, pre-norm blocks whose attention stays
inside one temporal slice (all slices of the same h x w are batched), the final patch merger
(LayerNorm before the 2x2 shuffle) and one DeepStack merger per tapped block (LayerNorm after it).

Text model (docs/qwen3vl.md §4/§5): Qwen3 decoder layers (RMSNorm, q/k per-head RMSNorm before RoPE, grouped-query
attention, SwiGLU MLP), interleaved MRoPE generalised to the config's mrope_section, DeepStack
features added at the visual positions after the first len(deepstack) layers, optional tied
lm_head. Attention takes an optional boolean mask [B, S, S] (True = may attend) so training can
pack several question blocks after one shared video prefix; without a mask it is causal.
"""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------
class Qwen3VLConfig:
    """The fields of a Hugging Face Qwen3-VL config.json that the model uses. `raw` keeps the whole
    dictionary so saving writes back what was read plus any changes."""

    def __init__(self, d):
        self.raw = json.loads(json.dumps(d))
        t, v = d["text_config"], d["vision_config"]
        self.vocab_size = t["vocab_size"]
        self.hidden_size = t["hidden_size"]
        self.num_hidden_layers = t["num_hidden_layers"]
        self.num_attention_heads = t["num_attention_heads"]
        self.num_key_value_heads = t["num_key_value_heads"]
        self.head_dim = t.get("head_dim", self.hidden_size // self.num_attention_heads)
        self.intermediate_size = t["intermediate_size"]
        self.rms_norm_eps = t.get("rms_norm_eps", 1e-6)
        rope = t.get("rope_scaling") or t.get("rope_parameters") or {}
        self.rope_theta = t.get("rope_theta", rope.get("rope_theta", 5e6))
        self.mrope_section = list(rope.get("mrope_section", [24, 20, 20]))
        self.mrope_interleaved = rope.get("mrope_interleaved", True)
        self.tie_word_embeddings = d.get("tie_word_embeddings", t.get("tie_word_embeddings", False))
        self.v_depth = v["depth"]
        self.v_hidden = v["hidden_size"]
        self.v_heads = v["num_heads"]
        self.v_intermediate = v["intermediate_size"]
        self.v_out = v["out_hidden_size"]
        self.patch_size = v.get("patch_size", 16)
        self.temporal_patch_size = v.get("temporal_patch_size", 2)
        self.merge = v.get("spatial_merge_size", 2)
        self.in_channels = v.get("in_channels", 3)
        self.num_position_embeddings = v["num_position_embeddings"]
        self.deepstack_visual_indexes = list(v.get("deepstack_visual_indexes", []))
        self.video_token_id = d["video_token_id"]
        self.image_token_id = d["image_token_id"]
        self.vision_start_token_id = d["vision_start_token_id"]
        self.vision_end_token_id = d["vision_end_token_id"]
        if not self.mrope_interleaved:
            raise ValueError("only the interleaved MRoPE layout of Qwen3-VL is implemented")
        if 2 * sum(self.mrope_section) != self.head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} does not cover head_dim "
                             f"{self.head_dim} (2*sum must equal head_dim)")
        side = int(round(math.sqrt(self.num_position_embeddings)))
        if side * side != self.num_position_embeddings:
            raise ValueError("num_position_embeddings must be a square")
        self.pos_side = side

    @classmethod
    def from_file(cls, path):
        with open(path) as f:
            return cls(json.load(f))


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """Qwen3 RMSNorm: normalise in float32, cast back, multiply by the weight (no +1 offset)."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dt)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def attention(q, k, v, scale, mask_add):
    """Eager attention. q [.., Hq, L, d], k/v [.., Hkv, L, d]; GQA by repeating kv heads.
    mask_add: additive mask broadcastable to the scores, or None."""
    rep = q.shape[-3] // k.shape[-3]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=-3)
        v = v.repeat_interleave(rep, dim=-3)
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask_add is not None:
        s = s + mask_add
    p = torch.softmax(s.float(), dim=-1).to(q.dtype)
    return torch.matmul(p, v)


# ---------------------------------------------------------------------------------------------------
# Vision tower (docs/qwen3vl.md §3)
# ---------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, c):
        super().__init__()
        k = (c.temporal_patch_size, c.patch_size, c.patch_size)
        self.proj = nn.Conv3d(c.in_channels, c.v_hidden, kernel_size=k, stride=k, bias=True)

    def forward(self, x):
        # The kernel covers the whole patch, so the convolution is one matrix product on the
        # (c, tp, py, px)-ordered 1536-vectors.
        w = self.proj.weight
        return F.linear(x.to(w.dtype), w.reshape(w.shape[0], -1), self.proj.bias)


class VisionAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c.v_heads
        self.qkv = nn.Linear(c.v_hidden, 3 * c.v_hidden, bias=True)
        self.proj = nn.Linear(c.v_hidden, c.v_hidden, bias=True)

    def forward(self, x, cos, sin):
        # x: [S, L, D] (S temporal slices of L tokens each; attention never crosses slices).
        S, L, D = x.shape
        qkv = self.qkv(x).reshape(S, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [S, H, L, dh]
        dt = q.dtype
        q = (q.float() * cos + rotate_half(q.float()) * sin).to(dt)
        k = (k.float() * cos + rotate_half(k.float()) * sin).to(dt)
        o = attention(q, k, v, (D // self.heads) ** -0.5, None)
        return self.proj(o.transpose(1, 2).reshape(S, L, D))


class VisionMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.linear_fc1 = nn.Linear(c.v_hidden, c.v_intermediate, bias=True)
        self.linear_fc2 = nn.Linear(c.v_intermediate, c.v_hidden, bias=True)

    def forward(self, x):
        return self.linear_fc2(F.gelu(self.linear_fc1(x), approximate="tanh"))


class VisionBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.v_hidden, eps=1e-6)
        self.norm2 = nn.LayerNorm(c.v_hidden, eps=1e-6)
        self.attn = VisionAttention(c)
        self.mlp = VisionMLP(c)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """2x2 merge: LayerNorm over D before the shuffle (final merger) or over 4D after it
    (DeepStack mergers), then fc1 -> exact GELU -> fc2."""

    def __init__(self, c, postshuffle):
        super().__init__()
        self.hidden = c.v_hidden * c.merge * c.merge
        self.postshuffle = postshuffle
        self.norm = nn.LayerNorm(self.hidden if postshuffle else c.v_hidden, eps=1e-6)
        self.linear_fc1 = nn.Linear(self.hidden, self.hidden, bias=True)
        self.linear_fc2 = nn.Linear(self.hidden, c.v_out, bias=True)

    def forward(self, x):
        if self.postshuffle:
            x = self.norm(x.reshape(-1, self.hidden))
        else:
            x = self.norm(x).reshape(-1, self.hidden)
        return self.linear_fc2(F.gelu(self.linear_fc1(x)))


class VisionModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.patch_embed = PatchEmbed(c)
        self.pos_embed = nn.Embedding(c.num_position_embeddings, c.v_hidden)
        self.blocks = nn.ModuleList([VisionBlock(c) for _ in range(c.v_depth)])
        self.merger = PatchMerger(c, postshuffle=False)
        self.deepstack_merger_list = nn.ModuleList(
            [PatchMerger(c, postshuffle=True) for _ in c.deepstack_visual_indexes])
        dh = c.v_hidden // c.v_heads
        rdim = dh // 2
        inv = 1.0 / (10000.0 ** (torch.arange(0, rdim, 2, dtype=torch.float) / rdim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def _merge_order(self, h, w):
        """(row, col) of each patch in the merge-window order of docs/qwen3vl.md §1.6, as LongTensors [h*w]."""
        m = self.c.merge
        r = (torch.arange(h // m)[:, None, None, None] * m + torch.arange(m)[None, None, :, None])
        q = (torch.arange(w // m)[None, :, None, None] * m + torch.arange(m)[None, None, None, :])
        shape = (h // m, w // m, m, m)
        return r.expand(shape).reshape(-1), q.expand(shape).reshape(-1)

    def pos_embed_for(self, h, w):
        """Bilinear resample of the learned table to an h x w grid (docs/qwen3vl.md §3.2), in merge order [h*w, D]."""
        n = self.c.pos_side
        E = self.pos_embed.weight
        hs = torch.linspace(0, n - 1, h)
        ws = torch.linspace(0, n - 1, w)
        hf, wf = hs.int(), ws.int()
        hc, wc = (hf + 1).clamp(max=n - 1), (wf + 1).clamp(max=n - 1)
        dh, dw = hs - hf, ws - wf
        idx = [(hf[:, None] * n + wf[None]), (hf[:, None] * n + wc[None]),
               (hc[:, None] * n + wf[None]), (hc[:, None] * n + wc[None])]
        wts = [(1 - dh)[:, None] * (1 - dw)[None], (1 - dh)[:, None] * dw[None],
               dh[:, None] * (1 - dw)[None], dh[:, None] * dw[None]]
        pe = None
        for i, wt in zip(idx, wts):
            term = E[i.reshape(-1).long()] * wt.reshape(-1, 1).to(E.dtype)
            pe = term if pe is None else pe + term
        rows, cols = self._merge_order(h, w)
        return pe[rows * w + cols]

    def rope_for(self, h, w):
        """Angles [h*w, dh/2] = (row freqs | col freqs) in merge order, and cos/sin [h*w, dh]."""
        rows, cols = self._merge_order(h, w)
        f = torch.cat([rows.float()[:, None] * self.inv_freq[None],
                       cols.float()[:, None] * self.inv_freq[None]], dim=-1)
        emb = torch.cat([f, f], dim=-1)
        return f, emb.cos(), emb.sin()

    def forward(self, pixel_values, grid_thw, trace=None):
        """pixel_values [N, C*tp*p*p]; grid_thw: list of (t, h, w), one per video in the order of
        its rows. Returns (embeds [N/4, out], [deepstack [N/4, out] per tap]) in the same order.
        Slices of equal h x w are batched through the blocks together."""
        grid_thw = [tuple(int(v) for v in g) for g in grid_thw]
        x = self.patch_embed(pixel_values)
        if trace:
            trace("vision_patch_embed", x)
        pe = torch.cat([self.pos_embed_for(h, w).repeat(t, 1) for t, h, w in grid_thw], dim=0)
        if trace:
            trace("vision_pos_embed", pe)
        x = x + pe
        starts, off = [], 0
        for t, h, w in grid_thw:
            starts.append(off)
            off += t * h * w
        if off != x.shape[0]:
            raise ValueError(f"grid covers {off} patches but pixel_values has {x.shape[0]} rows")
        groups = {}
        for i, (t, h, w) in enumerate(grid_thw):
            groups.setdefault((h, w), []).append(i)
        out = [None] * len(grid_thw)
        taps_out = [[None] * len(grid_thw) for _ in self.deepstack_merger_list]
        for (h, w), members in groups.items():
            xs = torch.cat([x[starts[i]:starts[i] + grid_thw[i][0] * h * w] for i in members])
            xs = xs.reshape(-1, h * w, xs.shape[-1])
            f, cos, sin = self.rope_for(h, w)
            if trace:
                trace("vision_rope_freqs", f.repeat(xs.shape[0], 1))
            taps = []
            for li, blk in enumerate(self.blocks):
                xs = blk(xs, cos, sin)
                if trace:
                    trace("vision_block_out", xs.reshape(-1, xs.shape[-1]))
                if li in self.c.deepstack_visual_indexes:
                    k = self.c.deepstack_visual_indexes.index(li)
                    taps.append((k, self.deepstack_merger_list[k](xs.reshape(-1, xs.shape[-1]))))
            emb = self.merger(xs.reshape(-1, xs.shape[-1]))
            q = (h * w) // (self.c.merge ** 2)
            o = 0
            for i in members:
                n = grid_thw[i][0] * q
                out[i] = emb[o:o + n]
                for k, tap in taps:
                    taps_out[k][i] = tap[o:o + n]
                o += n
        embeds = torch.cat(out, dim=0)
        deep = [torch.cat(tk, dim=0) for tk in taps_out]
        return embeds, deep


# ---------------------------------------------------------------------------------------------------
# Text model (docs/qwen3vl.md §4, §5)
# ---------------------------------------------------------------------------------------------------
class TextAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.hq, self.hkv, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.hq * self.hd, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.hkv * self.hd, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.hkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.hq * self.hd, c.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.hd, c.rms_norm_eps)
        self.k_norm = RMSNorm(self.hd, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask_add):
        B, S, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, S, self.hq, self.hd)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, S, self.hkv, self.hd)).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.hkv, self.hd).transpose(1, 2)
        c, s = cos[:, None].to(q.dtype), sin[:, None].to(q.dtype)
        q = q * c + rotate_half(q) * s
        k = k * c + rotate_half(k) * s
        o = attention(q, k, v, self.hd ** -0.5, mask_add)
        return self.o_proj(o.transpose(1, 2).reshape(B, S, self.hq * self.hd))


class TextMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = TextAttention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = TextMLP(c)

    def forward(self, x, cos, sin, mask_add):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask_add)
        return x + self.mlp(self.post_attention_layernorm(x))


class TextModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float()
                                      / c.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def rope(self, position_ids):
        """Interleaved MRoPE (docs/qwen3vl.md §5.2, any mrope_section): position_ids [3, B, S] -> cos/sin [B,S,hd].
        Slot j takes the H axis when j % 3 == 1 and j < 3*section[1], the W axis when j % 3 == 2
        and j < 3*section[2], else the T axis."""
        f = position_ids[..., None].float() * self.inv_freq  # [3, B, S, hd/2]
        ft = f[0].clone()
        for axis, offset in ((1, 1), (2, 2)):
            end = self.c.mrope_section[axis] * 3
            ft[..., offset:end:3] = f[axis, ..., offset:end:3]
        emb = torch.cat([ft, ft], dim=-1)
        return emb.cos(), emb.sin()

    def forward(self, x, position_ids, mask_bool=None, visual_mask=None, deepstack=None,
                trace=None):
        """x: input embeddings [B, S, H] (visual rows already scattered in); position_ids
        [3, B, S]; mask_bool [B, S, S] (True = may attend) or None for causal; visual_mask [B, S]
        bool; deepstack: list of [n_visual, H] added after layers 0..len-1. Returns the final
        normalised hidden states [B, S, H]."""
        B, S, _ = x.shape
        cos, sin = self.rope(position_ids)
        if trace:
            trace("text_rope_cos", cos[0])
            trace("text_rope_sin", sin[0])
        if mask_bool is None:
            mask_bool = torch.ones(S, S, dtype=torch.bool).tril()[None].expand(B, S, S)
        mask_add = torch.zeros(mask_bool.shape, dtype=x.dtype)
        mask_add = mask_add.masked_fill(~mask_bool, torch.finfo(x.dtype).min)[:, None]
        for li, layer in enumerate(self.layers):
            if trace:
                trace("text_hidden_in", x[0])
            x = layer(x, cos, sin, mask_add)
            if trace:
                trace("text_layer_out", x[0])
            if deepstack is not None and li < len(deepstack) and visual_mask is not None:
                x = x.clone()
                x[visual_mask] = x[visual_mask] + deepstack[li].to(x.dtype)
        if trace:
            trace("text_hidden_in", x[0])
        x = self.norm(x)
        if trace:
            trace("final_hidden", x[0])
        return x


class Qwen3VLInner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.visual = VisionModel(c)
        self.language_model = TextModel(c)


class Qwen3VL(nn.Module):
    """Qwen3VLForConditionalGeneration: `model.visual`, `model.language_model`, `lm_head`."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Qwen3VLInner(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    # -- weights --------------------------------------------------------------------------------
    def lm_weight(self):
        if self.config.tie_word_embeddings:
            return self.model.language_model.embed_tokens.weight
        return self.lm_head.weight

    def init_weights(self, std=0.02, seed=None):
        """Hugging Face's initialisation: normal(0, std) for linear/embedding weights, zero biases,
        ones for norms."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("bias"):
                    p.zero_()
                elif "norm" in name.split(".")[-2]:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    def hf_state_dict(self):
        """The tensors of model.safetensors (lm_head.weight only when untied)."""
        return {k: v for k, v in self.state_dict().items()}

    def load_hf_state_dict(self, tensors, strict=True):
        sd = {k: v.float() for k, v in tensors.items()}
        if self.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        missing, unexpected = self.load_state_dict(sd, strict=False)
        if strict and (missing or unexpected):
            raise KeyError(f"checkpoint mismatch: missing {missing[:8]} unexpected {unexpected[:8]}")

    # -- forward ----------------------------------------------------------------------------------
    def embed(self, input_ids, pixel_values=None, grid_thw=None, vision=None, trace=None):
        """Token embeddings with the video rows replaced by the vision output. Returns
        (x [B,S,H], visual_mask [B,S] or None, deepstack list or None)."""
        c = self.config
        x = self.model.language_model.embed_tokens(input_ids)
        vmask = (input_ids == c.video_token_id) | (input_ids == c.image_token_id)
        if vision is None and pixel_values is not None:
            vision = self.model.visual(pixel_values, grid_thw, trace=trace)
        if vision is None:
            if bool(vmask.any()):
                raise ValueError("visual tokens in the prompt but no pixel values")
            return x, None, None
        embeds, deep = vision
        if trace:
            trace("video_embeds", embeds)
            trace("deepstack_embeds", torch.stack(deep) if deep else embeds[:0])
        if int(vmask.sum()) != embeds.shape[0]:
            raise ValueError(f"{int(vmask.sum())} visual tokens but {embeds.shape[0]} embeddings")
        x = x.clone()
        x[vmask] = embeds.to(x.dtype)
        return x, vmask, deep

    def forward(self, input_ids, position_ids, pixel_values=None, grid_thw=None, mask_bool=None,
                logits_mask=None, vision=None, trace=None):
        """input_ids [B,S]; position_ids [3,B,S]; pixel_values [N, 1536] for all videos of the
        batch in order with grid_thw [(t,h,w), ...] (or precomputed `vision`); mask_bool [B,S,S] or
        None (causal). Returns logits [B,S,V], or [n, V] at logits_mask [B,S] positions only."""
        x, vmask, deep = self.embed(input_ids, pixel_values, grid_thw, vision, trace)
        if trace:
            trace("inputs_embeds", x[0])
        h = self.model.language_model(x, position_ids, mask_bool, vmask, deep, trace)
        if logits_mask is not None:
            h = h[logits_mask]
        return F.linear(h, self.lm_weight())


def load_pretrained(directory, dtype=torch.float32):
    """Loads config.json + model.safetensors from a Hugging Face-layout directory."""
    import os
    import safetensors_io
    cfg = Qwen3VLConfig.from_file(os.path.join(directory, "config.json"))
    model = Qwen3VL(cfg)
    tensors, _ = safetensors_io.load(os.path.join(directory, "model.safetensors"))
    model.load_hf_state_dict(tensors)
    return model.to(dtype)
