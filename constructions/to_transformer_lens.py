"""AlgoFormer -> TransformerLens: any construction or trained model as a ``HookedTransformer``.

    tl, hooks = to_hooked_transformer(model, n_loops=7)     # pre, then 7 copies of the loop, then post
    tl, hooks, model = from_run("runs/rep-algo")            # a trained run, at its trained T
    resid = encode(model, tokens)                            # the residual stream our model starts from
    logits, cache = tl.run_with_cache(resid, start_at_layer=0)
    cache[hooks["loop.7.hook_state"]]                        # == our run_with_cache's state after 7 loops

    export_transformer_lens(con, 7, "out/newton_T7")        # out/newton_T7.safetensors + .json
    tl, meta = load_transformer_lens("out/newton_T7")
    rows(meta, "Mx"), meta["hooks"]["loop.7.hook_state"]     # which rows hold Mx, at loop 7

The loop is unrolled: block j of the HookedTransformer is pre layer j, then loop layer i of loop t
(1-based) is block ``len(pre) + (t - 1) * len(loop) + i``, then the post layers. Each block computes
what our ``Layer`` computes (Eq. 1):

* no LayerNorm (``normalization_type=None``), or GPT-2's pre-LN in every block plus ``ln_final``
  for trained models that have exactly that; any other mix is refused;
* no attention scaling (``use_attn_scale=False``), or 1/sqrt(k) when every layer scales by the same k;
* ReLU, or GELU (torch's exact erf form in both libraries);
* bidirectional or causal, as the construction is (TransformerLens has one direction per model: a
  model mixing masks is refused);
* each head's value map W_O^h W_V^h through ``W_V`` / ``W_O`` exactly: TransformerLens has one
  ``d_head`` for queries, keys and values and one head count and MLP width for every block, so
  narrower heads, missing heads, missing FFNs and narrower FFNs are padded with zeros. A zero query
  and key row adds exact zeros to every score, a zero head has a zero value and output map, and a
  zero hidden unit gives act(0) = 0 for ReLU and GELU, so the padding changes no value; only the
  length of some dot products changes, which can reorder their summation (the round-trip test
  states the resulting tolerance);
* the read-out ``Linear(D, d_out)`` is the unembedding ``W_U``, ``b_U``; a construction has no
  read-out, so its unembedding is the identity and the answer is read from the final residual by
  the construction's ``Readout`` (``meta["readout"]``), as for our model.

The input is the residual stream itself (``start_at_layer=0``): ``encode`` gives it (the
construction's encoder tokens, or a trained model's read-in plus positional embedding), so the
embedding tables of the HookedTransformer are unused (zeros).

Refused with one line (``NotExportable``), rather than exported as something different:
input injection (the loop's input is h + e; TransformerLens blocks have no second input), an
attention in a wider dtype (``attention_dtype``), mixed masks, mixed activations, and norms other
than GPT-2's pre-LN. Eq. 3's per-loop post (``forward_each_loop``, TF_post on every loop's state) is
not a single forward pass: export one model per T instead.

Tested with transformer-lens 3.9 (``pip install -e ".[interp]"``). TransformerLens 4.x removed
``HookedTransformer`` (its ``TransformerBridge`` wraps Hugging Face models, whose blocks always carry
a LayerNorm), so the extra pins ``<4``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from algoformer import AlgoFormer

from .bridge import build_model
from .export import construction_meta
from .prompt import Construction

FORMAT, VERSION = "algoformer-transformer-lens", 1


class NotExportable(ValueError):
    """The model computes something a HookedTransformer cannot express."""


def _tl():
    try:
        import transformer_lens
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as e:
        raise ImportError("the TransformerLens export needs the optional extra: "
                          "python -m pip install -e \".[interp]\" (transformer-lens >= 3.9, < 4)") from e
    return transformer_lens, HookedTransformer, HookedTransformerConfig


def _layers(model: AlgoFormer) -> list:
    return list(model.pre) + list(model.loop) + list(model.post)


def _one(values: set, what: str):
    if len(values) > 1:
        raise NotExportable(f"cannot export to TransformerLens: the layers mix {what} "
                            f"{sorted(map(str, values))}, and a HookedTransformer has one for every block")
    return next(iter(values))


def tl_config_dict(model: AlgoFormer, n_loops: int, n_ctx: int | None = None) -> dict:
    """The ``HookedTransformerConfig`` fields of the unrolled model (plain JSON types)."""
    cfg = model.cfg
    if cfg.input_injection:
        raise NotExportable("cannot export to TransformerLens: input injection (the loop reads h + e, "
                            "e the TF_pre output) has no counterpart in a HookedTransformer block")
    lcs = [l.cfg for l in _layers(model)]
    if any(c.attention_dtype is not None for c in lcs):
        raise NotExportable("cannot export to TransformerLens: attention_dtype runs the attention in a "
                            "wider dtype than the stream, which a HookedTransformer cannot express")
    if any(c.scores != "softmax" for c in lcs):
        raise NotExportable("cannot export to TransformerLens: linear attention (scores=\"linear\"); its "
                            "attention is softmax attention only")
    mask = _one({c.mask for c in lcs}, "masks")
    act = _one({c.activation for c in lcs}, "activations")
    norm = _one({c.pre_norm for c in lcs}, "pre-norm settings")
    if norm != cfg.final_norm:
        raise NotExportable("cannot export to TransformerLens: its pre-LayerNorm comes with a final "
                            f"LayerNorm, but this model has pre_norm={norm}, final_norm={cfg.final_norm}")
    scale = _one({c.d_head if c.scale_scores else None for c in lcs if c.n_heads}, "score scalings")
    if not isinstance(n_loops, int) or isinstance(n_loops, bool) or n_loops < 0:
        raise ValueError(f"n_loops={n_loops!r} is invalid: expected an integer >= 0")
    heads = [c for c in lcs if c.n_heads]
    d_vocab = cfg.d_out if cfg.d_out is not None else cfg.d_model
    n_ctx = n_ctx or (cfg.n_positions or 1024)
    return dict(
        n_layers=len(model.pre) + n_loops * len(model.loop) + len(model.post), d_model=cfg.d_model,
        n_ctx=int(n_ctx), d_head=max([max(c.d_head, c.value_dim) for c in heads] + [1]),
        n_heads=max([c.n_heads for c in heads] + [1]), d_mlp=max([c.d_ff for c in lcs] + [1]),
        act_fn=act, normalization_type="LN" if norm else None, attention_dir=
        "causal" if mask == "causal" else "bidirectional", d_vocab=d_vocab, d_vocab_out=d_vocab,
        use_attn_scale=scale is not None, attn_scale=float(np.sqrt(scale)) if scale else 1.0,
        positional_embedding_type="standard", default_prepend_bos=False, seed=0,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."))


def _block_tensors(layer, j: int, tl: dict) -> dict[str, torch.Tensor]:
    """Block j's tensors: our layer's weights in TransformerLens's names and shapes, zero-padded."""
    c, D, H, dh, F = layer.cfg, tl["d_model"], tl["n_heads"], tl["d_head"], tl["d_mlp"]
    ref = next(layer.parameters())
    z = lambda *shape: torch.zeros(shape, dtype=ref.dtype)
    out = {f"blocks.{j}.attn.{n}": z(H, D, dh) for n in ("W_Q", "W_K", "W_V")}
    out.update({f"blocks.{j}.attn.W_O": z(H, dh, D), f"blocks.{j}.attn.b_O": z(D),
                **{f"blocks.{j}.attn.b_{n}": z(H, dh) for n in "QKV"}})
    if layer.attn is not None:
        a, k, v = layer.attn, c.d_head, c.value_dim
        for h in range(c.n_heads):
            out[f"blocks.{j}.attn.W_Q"][h, :, :k] = a.w_q[h].T          # (D, k): q = h W_Q
            out[f"blocks.{j}.attn.W_K"][h, :, :k] = a.w_k[h].T
            out[f"blocks.{j}.attn.W_V"][h, :, :v] = a.w_v[h].T          # (D, v)
            out[f"blocks.{j}.attn.W_O"][h, :v, :] = a.w_o[:, h * v:(h + 1) * v].T   # (v, D)
    W_in, b_in, W_out, b_out = z(D, F), z(F), z(F, D), z(D)
    if layer.ffn is not None:
        f, n = layer.ffn, c.d_ff
        W_in[:, :n], W_out[:n] = f.fc1.weight.T, f.fc2.weight.T
        if c.bias:
            b_in[:n], b_out[:] = f.fc1.bias, f.fc2.bias
    out.update({f"blocks.{j}.mlp.W_in": W_in, f"blocks.{j}.mlp.b_in": b_in,
                f"blocks.{j}.mlp.W_out": W_out, f"blocks.{j}.mlp.b_out": b_out})
    if tl["normalization_type"] == "LN":
        for ours, theirs in (("norm1", "ln1"), ("norm2", "ln2")):
            out[f"blocks.{j}.{theirs}.w"] = getattr(layer, ours).weight
            out[f"blocks.{j}.{theirs}.b"] = getattr(layer, ours).bias
    return out


def hook_names(model: AlgoFormer, n_loops: int) -> dict[str, str]:
    """Our hook name -> the HookedTransformer's, for every state and attention pattern."""
    names: dict[str, str] = {}
    stacks = [("pre", model.pre, [None])] + [("loop", model.loop, list(range(1, n_loops + 1)))] + \
             [("post", model.post, [None])]
    j = 0
    for stack, layers, loops in stacks:
        for t in loops:
            scope = f"{stack}." if t is None else f"loop.{t}."
            for i, _ in enumerate(layers):
                names[f"{scope}{i}.hook_pattern"] = f"blocks.{j}.attn.hook_pattern"
                names[f"{scope}{i}.hook_attn_out"] = f"blocks.{j}.hook_resid_mid"
                names[f"{scope}{i}.hook_resid_post"] = f"blocks.{j}.hook_resid_post"
                j += 1
            if t is not None:
                names[f"loop.{t}.hook_state"] = f"blocks.{j - 1}.hook_resid_post" if j else "hook_start"
    n_pre = len(model.pre)
    names["hook_pre"] = f"blocks.{n_pre - 1}.hook_resid_post" if n_pre else "hook_start"
    names["hook_post"] = f"blocks.{j - 1}.hook_resid_post" if j else "hook_start"
    return names


def to_hooked_transformer(model: AlgoFormer | Construction, n_loops: int, n_ctx: int | None = None):
    """(HookedTransformer in eval mode, hook-name map) computing ``model(x, n_loops)`` from the
    residual stream ``encode(model, x)``. A ``Construction`` is built in float64 first."""
    if isinstance(model, Construction):
        model = build_model(model.weights)
    _, HookedTransformer, HookedTransformerConfig = _tl()
    tl = tl_config_dict(model, n_loops, n_ctx)
    hooked = HookedTransformer(HookedTransformerConfig(**{**tl, "dtype": getattr(torch, tl["dtype"])}))
    hooked.load_state_dict(_state(model, n_loops, tl, hooked.state_dict()), strict=True)
    return hooked.eval(), hook_names(model, n_loops)


def _state(model: AlgoFormer, n_loops: int, tl: dict, own: dict) -> dict[str, torch.Tensor]:
    layers = list(model.pre) + list(model.loop) * n_loops + list(model.post)
    state = {k: v.clone() for k, v in own.items()}               # masks, IGNORE and the tables
    for name in ("embed.W_E", "pos_embed.W_pos"):
        state[name] = torch.zeros_like(own[name])              # unused: the stream is fed directly
    with torch.no_grad():
        for j, layer in enumerate(layers):
            state.update({k: v.detach().clone() for k, v in _block_tensors(layer, j, tl).items()})
        if model.read_out is not None:
            state["unembed.W_U"] = model.read_out.weight.detach().T.clone()
            state["unembed.b_U"] = model.read_out.bias.detach().clone()
        else:
            state["unembed.W_U"] = torch.eye(tl["d_model"], dtype=own["unembed.W_U"].dtype)
            state["unembed.b_U"] = torch.zeros_like(own["unembed.b_U"])
        if model.final_norm is not None:
            state["ln_final.w"], state["ln_final.b"] = model.final_norm.weight, model.final_norm.bias
    return state


def from_run(run_dir: str | Path, n_loops: int | None = None, n_ctx: int | None = None):
    """(HookedTransformer, hook-name map, the run's model) of a trained run (``python -m algoformer.train``),
    read safely (``algoformer.evaluate.load_run``); ``n_loops`` defaults to the run's trained T."""
    from algoformer.evaluate import load_run
    cfg, model, _ = load_run(run_dir)
    T = (cfg.T if cfg.model != "standard" else 0) if n_loops is None else n_loops
    hooked, hooks = to_hooked_transformer(model, T, n_ctx or model.cfg.n_positions)
    return hooked, hooks, model


def encode(model: AlgoFormer, x: torch.Tensor) -> torch.Tensor:
    """The residual stream the HookedTransformer starts from: our read-in and positional table."""
    with torch.no_grad():
        return model.embed(x)


# -- files ---------------------------------------------------------------------------------------
def export_transformer_lens(source: AlgoFormer | Construction, n_loops: int, path: str | Path,
                            n_ctx: int | None = None) -> tuple[Path, Path]:
    """``path.safetensors`` (the HookedTransformer's state dict) and ``path.json``: its config, the
    hook map, and for a construction the layout's row names and blocks, the prompt and the read-out."""
    from safetensors.torch import save_file
    con = source if isinstance(source, Construction) else None
    model = build_model(con.weights) if con is not None else source
    hooked, hooks = to_hooked_transformer(model, n_loops, n_ctx)
    meta = {"format": FORMAT, "version": VERSION, "n_loops": n_loops,
            "tl_config": tl_config_dict(model, n_loops, n_ctx), "hooks": hooks,
            **(construction_meta(con) if con is not None else {"layout": None})}
    stem = Path(path)
    st, js = stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
    st.parent.mkdir(parents=True, exist_ok=True)
    keep = {k: v.contiguous() for k, v in hooked.state_dict().items() if k.startswith(("blocks.", "unembed",
                                                                                          "ln_final"))}
    save_file({k: v for k, v in keep.items() if not k.endswith((".mask", ".IGNORE"))}, str(st))
    js.write_text(json.dumps(meta, indent=1) + "\n")
    return st, js


def load_transformer_lens(path: str | Path):
    """(HookedTransformer, meta) from ``export_transformer_lens``'s two files."""
    from safetensors.torch import load_file
    _, HookedTransformer, HookedTransformerConfig = _tl()
    stem = Path(path)
    meta = json.loads(stem.with_name(stem.name + ".json").read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{stem}.json is not an {FORMAT} file of version {VERSION}")
    tl = meta["tl_config"]
    hooked = HookedTransformer(HookedTransformerConfig(**{**tl, "dtype": getattr(torch, tl["dtype"])}))
    state = hooked.state_dict()
    state.update(load_file(str(stem.with_name(stem.name + ".safetensors"))))
    state["embed.W_E"].zero_(), state["pos_embed.W_pos"].zero_()
    hooked.load_state_dict(state, strict=True)
    return hooked.eval(), meta


def rows(meta: dict, register: str) -> slice:
    """The residual rows of a named register (the same at every loop): ``rows(meta, "Mx")``."""
    blocks = (meta.get("layout") or {}).get("blocks", {})
    if register not in blocks:
        raise KeyError(f"register={register!r} is not in the layout: expected one of {', '.join(blocks)}")
    a, b = blocks[register]
    return slice(a, b)
