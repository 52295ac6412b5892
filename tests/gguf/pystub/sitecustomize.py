"""Compatibility for Debian 12's torch 1.13 under llama.cpp's converter (tests/gguf/make_fixtures.sh
puts this directory on PYTHONPATH): the converter's dtype table names torch.uint16/uint32/uint64,
and torch.float8_e4m3fn/float8_e5m2, which torch gained in 2.1-2.3. They become distinct placeholder objects (no Qwen3-VL tensor has those
dtypes, so the table entries are never used)."""
try:
    import torch
except ImportError:  # only the converter's environment needs this
    torch = None
if torch is not None:
    for _n in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"):
        if not hasattr(torch, _n):
            setattr(torch, _n, type("missing_torch_" + _n, (), {})())
