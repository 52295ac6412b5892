#!/usr/bin/python3
"""Deepens a train.py checkpoint's text model without changing what it computes.

    grow.py IN.pt OUT.pt [--at 1] [--seed 1]

Inserts a Qwen3 decoder layer at index --at of the language model. The new layer's output
projections (self_attn.o_proj, mlp.down_proj) start at zero, so its residual branch adds nothing
and the grown model gives the same logits as the old one (checked here on a random prompt); its
other weights get train.py's initialisation (normal(0, 0.02), norms 1). AdamW's moments of the
existing weights are carried over, the new weights start without any. DeepStack taps stay after
the same layers as long as --at is past them. Everything else in the checkpoint (step, stage,
RNG states, the probe of --aux-weight) is kept, so `train.py --resume` continues from OUT.pt.

Used for the bundled demo model when the 2-layer model kept answering with another box's interval
in clips with several boxes: a third layer gives the pairs' states a second step before the answer
reads them.
"""
import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import qwen3vl_tiny  # noqa: E402

PREFIX = "model.language_model.layers."


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--at", type=int, default=1, help="index of the new layer")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)

    state = torch.load(a.input)
    cfg = copy.deepcopy(state["config"])
    n = cfg["text_config"]["num_hidden_layers"]
    taps = cfg["vision_config"].get("deepstack_visual_indexes", [])
    if not 0 < a.at <= n:
        ap.error(f"--at must be in 1..{n}")
    if a.at < len(taps):
        ap.error(f"--at {a.at} would move DeepStack injection points (after layers 0..{len(taps) - 1})")
    old = qwen3vl_tiny.Qwen3VL(qwen3vl_tiny.Qwen3VLConfig(state["config"]))
    old.load_state_dict(state["model"])

    cfg["text_config"]["num_hidden_layers"] = n + 1
    new = qwen3vl_tiny.Qwen3VL(qwen3vl_tiny.Qwen3VLConfig(cfg))
    new.init_weights(std=0.02, seed=a.seed)

    def renamed(key):
        """The new model's name of an old weight (layers at or after --at move up by one)."""
        if not key.startswith(PREFIX):
            return key
        i, rest = key[len(PREFIX):].split(".", 1)
        i = int(i)
        return f"{PREFIX}{i + 1 if i >= a.at else i}.{rest}"

    sd = new.state_dict()
    for k, v in state["model"].items():
        sd[renamed(k)] = v.clone()
    for k in sd:
        if k.startswith(f"{PREFIX}{a.at}.") and k.endswith(("o_proj.weight", "down_proj.weight")):
            sd[k].zero_()
    new.load_state_dict(sd)

    # The same function: compare logits on a random text prompt with a causal mask.
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, cfg["text_config"]["vocab_size"] - 40, (1, 48), generator=g)
    pos = torch.arange(48)[None, None].expand(3, 1, 48)
    with torch.no_grad():
        d = float((old(ids, pos) - new(ids, pos)).abs().max())
    print(f"grew {n} -> {n + 1} text layers (new layer {a.at}); max logit difference {d:.2e}")
    if d > 1e-5:
        print("grow.py: the grown model does not compute the same function", file=sys.stderr)
        return 1

    # AdamW state: parameters are numbered in model.parameters() order.
    old_names = [k for k, _ in old.named_parameters()]
    new_names = [k for k, _ in new.named_parameters()]
    index = {name: i for i, name in enumerate(new_names)}
    opt = state["optimizer"]
    moved = {index[renamed(name)]: opt["state"][i] for i, name in enumerate(old_names)
             if i in opt["state"]}
    opt["state"] = moved
    opt["param_groups"][0]["params"] = list(range(len(new_names)))

    state["model"] = new.state_dict()
    state["config"] = cfg
    state["args"] = dict(state["args"], layers=n + 1)
    state["grown"] = state.get("grown", []) + [{"step": state["step"], "at": a.at}]
    torch.save(state, a.output)
    print(f"wrote {a.output} (step {state['step']}, stage {state['stage']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
