#!/usr/bin/env python3
"""Writes the committed seed corpus of the libFuzzer harnesses (tests/fuzz/corpus/NAME/), including
the attack inputs of issue #13. Rerun after changing it: python3 tests/fuzz/make_seeds.py. Media
seeds are made with the ffmpeg CLI (tiny clips, a few KB each)."""
import json
import os
import shutil
import struct
import subprocess
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def put(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def proto():
    reqs = {
        "info": b'{"v":1,"op":"info","id":1}',
        "ask": b'{"v":1,"id":"a-1","op":"ask","video":"/media/a.mp4","question":"What happens?",'
               b'"system":"be brief","job":"j1","sampling":{"fps":2,"nframes":4,"min_pixels":4096,'
               b'"max_pixels":65536,"start":1,"end":3},"generation":{"max_new_tokens":8,"seed":1,'
               b'"greedy":true,"top_k":3,"top_p":0.9,"temperature":0.5},"deadline_s":30}',
        "ask_url": b'{"v":1,"op":"ask","video":"https://example.com/v.mp4","question":"q"}',
        "jobs": b'{"v":1,"op":"jobs","limit":10}',
        "job": b'{"v":1,"op":"job","job":"j1"}',
        "cancel": b'{"v":1,"op":"cancel","job":"j1"}',
        "watch": b'{"v":1,"op":"watch","url":"udp://127.0.0.1:5000","name":"cam","questions":'
                 b'["a?","b?"],"fps":2,"window_s":4,"update_s":2,"max_pixels":65536,"speed":1}',
        "events": b'{"v":1,"op":"events","name":"cam","since":3,"limit":5}',
        # issue #13 item 3: invalid UTF-8, raw control characters, \u0000
        "attack_bad_utf8": b'{"v":1,"op":"ask","video":"/a","question":"caf\xc3 \xff\xfe"}',
        "attack_surrogate": b'{"v":1,"op":"ask","video":"/a","question":"\xed\xa0\x80"}',
        "attack_control": b'{"v":1,"op":"ask","video":"/a","question":"a\x01\x1b[31mb"}',
        "attack_nul_escape": b'{"v":1,"op":"ask","video":"/a.mp4\\u0000.txt","question":"q\\u0000"}',
        "attack_lone_escape": b'{"v":1,"op":"ask","video":"/a","question":"\\ud800 \\udc00"}',
        "attack_long_key": b'{"v":1,"op":"info","' + "\u20ac".encode() * 40 + b'":1}',
        # item 10: duplicate keys, odd nframes
        "attack_dup": b'{"v":1,"op":"jobs","limit":5,"limit":900}',
        "attack_dup_nested": b'{"v":1,"op":"ask","video":"/a","question":"q","sampling":'
                             b'{"fps":1,"fps":2}}',
        "attack_nframes_odd": b'{"v":1,"op":"ask","video":"/a","question":"q","sampling":'
                              b'{"nframes":3}}',
        "attack_nesting": b"[" * 2000,
        "attack_paths": b'{"v":1,"op":"ask","video":"file:///etc/passwd","question":"q"}',
        "attack_concat": b'{"v":1,"op":"ask","video":"concat:/etc/passwd|/etc/shadow","question":"q"}',
        # item 14: RTSP transport and credentials in the URL
        "watch_rtsp": b'{"v":1,"op":"watch","url":"rtsp://user:pa55@127.0.0.1:8554/cam","name":"c",'
                      b'"question":"q","rtsp_transport":"udp"}',
    }
    for k, v in reqs.items():
        put("fuzz_proto", k, v)


def config():
    with open(os.path.join(ROOT, "systemd", "vigild.conf"), "rb") as f:
        put("fuzz_config", "vigild.conf", f.read())
    put("fuzz_config", "small", "model_dir = /x\nmax_queued_jobs = 4\nlog_level = debug\n"
        "allowed_protocols = http,https\nmedia_roots = /tmp\n# comment\n\n")
    put("fuzz_config", "bad", "max_queued_jobs = -1\nnope = 3\nsocket_mode = 0999\n = x\nkey\n")
    put("fuzz_config", "long", "runtime_dir = " + "a" * 2000 + "\n")


def safetensors(tensors):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def checkpoint():
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    bf16 = struct.pack("<4H", 0x3F80, 0xC000, 0x3F00, 0x4040)
    f16 = struct.pack("<4H", 0x3C00, 0xC000, 0x3800, 0x4200)
    put("fuzz_checkpoint", "st_ok", b"\0" + safetensors(
        [("a.weight", "F32", [2, 2], f32), ("b", "BF16", [4], bf16), ("c", "F16", [1, 4], f16)]))
    # item 9: all-NaN weights, infinity
    put("fuzz_checkpoint", "st_nan", b"\0" + safetensors([("w", "F32", [4], b"\xff" * 16)]))
    put("fuzz_checkpoint", "st_inf", b"\0" + safetensors([("w", "BF16", [2], b"\x80\x7f\x80\xff")]))
    put("fuzz_checkpoint", "st_offsets", b"\0" + struct.pack("<Q", 60) +
        b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,99999]}}' + b" " * 2)
    put("fuzz_checkpoint", "st_meta", b"\0" + safetensors([("w", "F32", [1], f32[:4])])
        .replace(b'{"w"', b'{"__metadata__":{"format":"pt"},"w"', 1))
    put("fuzz_checkpoint", "st_short", b"\0" + struct.pack("<Q", 1 << 40))
    with open(os.path.join(ROOT, "models", "demo", "config.json"), "rb") as f:
        cfg = f.read()
    put("fuzz_checkpoint", "config_demo", b"\1" + cfg)
    c = json.loads(cfg)
    tc = c.get("text_config", c)
    tc["max_position_embeddings"] = 1  # item 9
    put("fuzz_checkpoint", "config_tiny_ctx", b"\1" + json.dumps(c).encode())


def tokenizer():
    with open(os.path.join(ROOT, "models", "demo", "tokenizer.json"), "rb") as f:
        tok = f.read()
    put("fuzz_tokenizer", "demo", tok)
    # item 9: a tokenizer without the chat template's special tokens
    put("fuzz_tokenizer", "no_special", tok.replace(b"<|video_pad|>", b"<|video_pxd|>")
        .replace(b"<|im_start|>", b"<|xm_start|>"))
    put("fuzz_tokenizer", "tiny", json.dumps({
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3},
                  "merges": ["a b"]},
        "added_tokens": [{"id": 4, "content": "<|im_start|>", "special": True}],
        "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}))


def answer():
    texts = ["The person enters from 1.5 to 3.0 seconds.", "0:01-0:03 and 00:00:05.5 - 00:00:07",
             "No, it does not happen.", "At 2 seconds.", "between 4s and 2s",
             "<0.0 seconds> to <12.75 seconds>", "from 1e308 to 1e309 seconds", "9" * 400,
             "from -3 to nan seconds", "1.0-2.0, 3.0-4.0, 5.0-6.0 " * 20]
    for i, t in enumerate(texts):
        put("fuzz_answer", "a%02d" % i, t)


def journal():
    def line(obj):
        j = json.dumps(obj, separators=(",", ":")).encode()
        return b"%08x " % zlib.crc32(j) + j + b"\n"
    recs = line({"job": "a", "state": "completed", "created": 1, "finished": 2, "question": "q"}) + \
        line({"job": "a", "state": "completed", "created": 1, "finished": 0}) + \
        line({"job": "b", "state": "running", "created": 3}) + line({"seq": 5, "text": "x"})
    put("fuzz_journal", "jobs", b"\0" + recs)
    put("fuzz_journal", "streamlog", b"\1" + recs * 3)
    put("fuzz_journal", "torn", b"\0" + recs + b"deadbeef {\"job\":\"c\"")
    put("fuzz_journal", "bad_crc", b"\0" + b"00000000 {\"job\":\"a\"}\n" + b"zz\n\n")
    put("fuzz_journal", "poison_utf8", b"\2" + line({"job": "p", "question": "x"}).replace(b'"x"', b'"\xff\xfe"'))


def media():
    d = os.path.join(CORPUS, "fuzz_media")
    os.makedirs(d, exist_ok=True)
    src = "testsrc2=size=32x24:rate=4"
    clips = {"mp4_h264": ["-c:v", "libx264", "-preset", "ultrafast", "-g", "2", "-f", "mp4"],
             "mkv_mpeg4": ["-c:v", "mpeg4", "-f", "matroska"],
             "ts_mpeg2": ["-c:v", "mpeg2video", "-f", "mpegts"],
             "avi_mjpeg": ["-c:v", "mjpeg", "-f", "avi"],
             "gif": ["-f", "gif"]}
    for name, args in clips.items():
        out = os.path.join(d, name)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", src, "-t", "1"]
                       + args + [out], check=True)
    with open(os.path.join(d, "mp4_h264"), "rb") as f:
        mp4 = f.read()
    put("fuzz_media", "mp4_truncated", mp4[: len(mp4) // 2])
    # item 11's shape: a frame size far beyond the pixel limits in a tiny file
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=black:size=2048x2048:rate=1", "-t", "1", "-c:v", "libx264", "-preset",
                    "ultrafast", "-qp", "51", "-f", "matroska", os.path.join(d, "mkv_huge_frame")], check=True)
    put("fuzz_media", "hls", "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n/etc/passwd\n#EXT-X-ENDLIST\n")

def gguf_file(kvs, tensors, align=32, version=3):
    """A GGUF v3 file: kvs = [(key, type, packed value bytes)], tensors = [(name, dims innermost
    first, ggml type, raw bytes)]; data laid out in order at aligned offsets."""
    def s(x):
        x = x.encode() if isinstance(x, str) else x
        return struct.pack("<Q", len(x)) + x
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + v
    data, infos = b"", b""
    for name, dims, t, raw in tensors:
        data += b"\0" * (-len(data) % align)
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", t, len(data))
        data += raw
    out += infos
    out += b"\0" * (-len(out) % align)
    return out + data


def gguf():
    def s(x):
        x = x.encode()
        return struct.pack("<Q", len(x)) + x
    def arr(t, fmt, vals):
        return struct.pack("<IQ", t, len(vals)) + b"".join(struct.pack(fmt, v) for v in vals)
    strs = struct.pack("<IQ", 8, 3) + s("a") + s("\u0120b") + s("<|im_start|>")
    kvs = [("general.architecture", 8, s("qwen3vl")), ("qwen3vl.block_count", 4, struct.pack("<I", 2)),
           ("qwen3vl.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-6)),
           ("qwen3vl.rope.dimension_sections", 9, arr(5, "<i", [2, 1, 1, 0])),
           ("tokenizer.ggml.tokens", 9, strs), ("tokenizer.ggml.token_type", 9, arr(5, "<i", [1, 1, 3])),
           ("t.u64", 10, struct.pack("<Q", 1 << 63)), ("t.f64", 12, struct.pack("<d", 0.5)),
           ("t.bool", 7, b"\1"), ("t.i8", 1, b"\xff"), ("t.u16", 3, b"\1\2")]
    f32 = struct.pack("<8f", 1, -2, 0.5, 3, 0, 1e-3, -7, 2)
    q8 = struct.pack("<e", 0.25) + bytes(range(32))
    q4k = bytes(range(144))
    tensors = [("token_embd.weight", [8, 1], 0, f32), ("blk.0.attn_q.weight", [32, 1], 8, q8),
               ("blk.0.ffn_up.weight", [256, 1], 12, q4k), ("f16", [4], 1, struct.pack("<4e", 1, 2, -3, 65504)),
               ("bf16", [2], 30, b"\x80\x3f\x80\xff"), ("q6k", [256], 14, bytes(210)),
               ("q5k", [256], 13, bytes(range(176))), ("q40", [32], 2, bytes(range(18)))]
    put("fuzz_gguf", "ok", gguf_file(kvs, tensors))
    put("fuzz_gguf", "ok_align64", gguf_file(kvs + [("general.alignment", 4, struct.pack("<I", 64))], tensors, 64))
    put("fuzz_gguf", "version2", gguf_file(kvs, tensors, version=2))
    put("fuzz_gguf", "absurd_kv", b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 60))
    put("fuzz_gguf", "absurd_tensors", b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0))
    put("fuzz_gguf", "long_string", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<IQ", 8, 1 << 62))
    put("fuzz_gguf", "unknown_type", gguf_file([("k", 77, b"\0" * 8)], []))
    put("fuzz_gguf", "nested_array", gguf_file([("k", 9, struct.pack("<IQ", 9, 1) + arr(4, "<I", [1]))], []))
    put("fuzz_gguf", "bad_tensor_type", gguf_file([], [("w", [32], 31, bytes(32))]))
    put("fuzz_gguf", "bad_align", gguf_file([("general.alignment", 4, struct.pack("<I", 48))], tensors))
    good = gguf_file([], tensors[:2])
    put("fuzz_gguf", "truncated", good[:-5])
    # misaligned and overlapping offsets: patch the second tensor's offset field
    i = good.index(b"blk.0.attn_q.weight") + len("blk.0.attn_q.weight") + 4 + 16 + 4
    put("fuzz_gguf", "misaligned", good[:i] + struct.pack("<Q", 33) + good[i + 8:])
    put("fuzz_gguf", "overlap", good[:i] + struct.pack("<Q", 0) + good[i + 8:])
    # a minimal qwen3vl text model that gguf_model.c accepts (so the fuzzer starts inside the
    # metadata, tokenizer and tensor-name checks)
    u32 = lambda v: struct.pack("<I", v)
    toks = ["a", "b", "ab", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    model_kvs = [("general.architecture", 8, s("qwen3vl")),
                 ("qwen3vl.embedding_length", 4, u32(8)), ("qwen3vl.block_count", 4, u32(1)),
                 ("qwen3vl.attention.head_count", 4, u32(2)), ("qwen3vl.attention.head_count_kv", 4, u32(1)),
                 ("qwen3vl.feed_forward_length", 4, u32(16)), ("qwen3vl.context_length", 4, u32(256)),
                 ("qwen3vl.attention.key_length", 4, u32(4)), ("qwen3vl.attention.value_length", 4, u32(4)),
                 ("qwen3vl.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-6)),
                 ("qwen3vl.rope.freq_base", 6, struct.pack("<f", 5e6)),
                 ("qwen3vl.rope.dimension_sections", 9, arr(5, "<i", [1, 1, 0, 0])),
                 ("qwen3vl.n_deepstack_layers", 4, u32(0)),
                 ("tokenizer.ggml.model", 8, s("gpt2")), ("tokenizer.ggml.pre", 8, s("qwen2")),
                 ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(toks)) + b"".join(s(t) for t in toks)),
                 ("tokenizer.ggml.token_type", 9, arr(5, "<i", [1, 1, 1, 3, 3, 3])),
                 ("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, 1) + s("a b")),
                 ("tokenizer.ggml.eos_token_id", 4, u32(4))]
    emb = struct.pack("<48f", *[0.01 * i for i in range(48)])
    put("fuzz_gguf", "qwen3vl_min", gguf_file(model_kvs, [("token_embd.weight", [8, 6], 0, emb),
                                                          ("blk.0.attn_q.weight", [32, 1], 8, q8),
                                                          ("output_norm.weight", [8], 0, emb[:32])]))
    put("fuzz_gguf", "dup_tensor", gguf_file([], [tensors[0], ("token_embd.weight", [8], 0, f32)]))


def http_chat():
    import base64
    mp4 = base64.b64encode(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2").decode()
    jpg = base64.b64encode(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01").decode()
    q = {"type": "text", "text": "When does the red car enter the lot?"}
    bodies = {
        "url": {"model": "vigil", "messages": [
            {"role": "system", "content": "Answer with times."},
            {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "/media/a.mp4"}}, q]}],
            "max_tokens": 32, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "mm_processor_kwargs": {"fps": 2, "max_pixels": 65536},
            "vigil": {"sampling": {"nframes": 4}, "deadline_s": 30, "job": "j1"}},
        "data_url": {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": "data:video/mp4;base64," + mp4}, q]}]},
        "input_video": {"messages": [{"role": "user", "content": [
            {"type": "input_video", "input_video": {"data": mp4, "format": "quicktime"}}, q]}]},
        "frames": {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + jpg}},
            {"type": "image_url", "image_url": "data:image/jpeg;base64," + jpg}, q]}],
            "vigil": {"frames_fps": 2}},
        "qwen_frames": {"messages": [{"role": "user", "content": [
            {"type": "video", "video": "data:video/jpeg;base64," + jpg + "," + jpg + "," + jpg}, q]}]},
        "too_many_frames": {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + jpg}}] * 12 + [q]}]},
        "bad_image": {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}, q]}]},
        "bad_mime": {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": "data:text/plain;base64,aGVsbG8="}}, q]}]},
        "no_text": {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": "rtsp://cam/1"}}]}]},
        "bad_fps": {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + jpg}}, q]}],
            "vigil": {"frames_fps": 1000}},
        "history": {"messages": [
            {"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"},
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
            {"role": "user", "content": [{"type": "video", "video": {"url": "/m/b.mkv"}}, q]}],
            "top_p": 0.9, "top_k": 5, "seed": 3, "max_completion_tokens": 7},
    }
    for name, body in bodies.items():
        put("fuzz_http_chat", name, json.dumps(body))
    put("fuzz_http_chat", "not_object", "[1,2,3]")
    put("fuzz_http_chat", "no_messages", '{"messages":[]}')
    put("fuzz_http_chat", "mime_utf8_cut", json.dumps({"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "data:" + "\u00e9" * 40 + ";base64,AAAA"}}, q]}]},
        ensure_ascii=False))


if __name__ == "__main__":
    import sys
    if sys.argv[1:]:  # only the named seed sets, e.g. `make_seeds.py gguf`
        for name in sys.argv[1:]:
            shutil.rmtree(os.path.join(CORPUS, "fuzz_" + name), ignore_errors=True)
            globals()[name]()
        sys.exit(0)
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    proto(); config(); checkpoint(); tokenizer(); answer(); journal(); media(); gguf(); http_chat()
