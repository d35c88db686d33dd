"""Export and import of AlgoFormer weights: safetensors for the tensors, a JSON file for the meaning.

    export_construction(con, "out/gd")        -> out/gd.safetensors, out/gd.json
    export_model(model, "out/trained", extra={"readout": ...})
    export_run("runs/rep-algo", "out/rep-algo")  # a training run's ckpt.pt, with its config and read-out
    model, meta = load_model("out/gd")         # a fresh AlgoFormer, weights loaded with load_exact
    con = load_construction("out/gd")          # the Construction back (weights, layout, read-outs)

The tensors are ``model.state_dict()`` under the model's own names (``loop.0.attn.w_q``, ...), so any
safetensors reader gets them. The JSON (also stored, compact, in the safetensors header under
``"algoformer"``) says what they mean:

    format, version     "algoformer-export", 1
    dtype               the tensors' dtype ("float64" for constructions)
    model_config        AlgoFormerConfig as plain fields: pre / loop / post lists of LayerConfig dicts
    layers              per stack and layer: name, mask, head names (constructions only)
    layout              {"dim": D, "rows": ["x[0]", ..., "answer"], "blocks": {"x": [0, 3], ...}}
    prompt              encoder prompt: n_tokens, the role of every token ("x_1", "y_1", ...,
                        "x_test", "sink"), and "pos": the Lemma A.1 vectors the encoder writes
    readout             "answer" / "iterate": register, its rows [start, stop) and the tokens
                        that hold it (a list of token indices)
    notes, assumptions  the parameters the weights were built with and what they assume of the data
    construction        the Construction's class ("module:QualName": its ``encode`` is the prompt
                        encoder) and the fields a subclass adds; ``load_construction`` rebuilds that
                        class when it can be imported (else a plain Construction)

A trained model has no layout (``null``); pass what is known about it (how its prompts are laid
out, where the prediction is read) in ``extra``, which is stored verbatim.
"""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from algoformer import AlgoFormer, AlgoFormerConfig, LayerConfig

from .bridge import build_model
from .causal_gd import DecoderConstruction
from .export_check import FORMAT, VERSION, ExportError, load_checked, read_json
from .layout import Layout
from .prompt import Construction, Readout
from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights

STACKS = ("pre", "loop", "post")


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


# -- configs as plain JSON ------------------------------------------------------------------------
def config_to_json(cfg: AlgoFormerConfig) -> dict:
    return asdict(cfg)


def config_from_json(d: dict) -> AlgoFormerConfig:
    stacks = {s: tuple(LayerConfig(**c) for c in d[s]) for s in STACKS}
    return AlgoFormerConfig(**{**d, **stacks})


# -- export -----------------------------------------------------------------------------------------
def export_model(model: AlgoFormer, path: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` (the state dict) and ``path.json`` (config + ``extra``)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    meta = {"format": FORMAT, "version": VERSION, "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
            "model_config": config_to_json(model.cfg), "layout": None, **(extra or {})}
    return _write(state, meta, path)


def _write(state: dict[str, torch.Tensor], meta: dict, path) -> tuple[Path, Path]:
    if not str(path).strip() or Path(path).name in ("", ".", ".."):
        raise ValueError(f"path={str(path)!r} is invalid: expected a file stem such as 'out/gd' (writes "
                         "out/gd.safetensors and out/gd.json)")
    st, js = _paths(path)
    for p in (st, js):
        if p.is_dir():
            raise ValueError(f"path={str(path)!r} is invalid: {str(p)!r} is a folder")
    st.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=1)
    save_file(state, str(st), metadata={"algoformer": json.dumps(meta)})
    js.write_text(text + "\n")
    return st, js


def _tokens(r: Readout, n: int) -> list[int]:
    return list(range(n))[r.tokens] if isinstance(r.tokens, slice) else (
        [int(r.tokens)] if np.ndim(r.tokens) == 0 else [int(t) for t in r.tokens])


def _readout_json(r: Readout, lay: Layout, n: int) -> dict:
    block = lay[r.register]
    return {"register": r.register, "rows": [block.start, block.stop], "tokens": _tokens(r, n),
            "scalar_token": np.ndim(r.tokens) == 0 and not isinstance(r.tokens, slice)}


def token_roles(N: int) -> list[str]:
    """The encoder prompt of ``constructions.prompt``: x_1, y_1, ..., x_N, y_N, x_test, sink."""
    return [f"{k}_{i}" for i in range(1, N + 1) for k in ("x", "y")] + ["x_test", "sink"]


def _prompt_kind(con: Construction) -> tuple[str, int, list[str]]:
    """(kind, N, token roles): the encoder prompt of ``constructions.prompt``, or the causal prompt of
    the decoder GD construction (Theorem 4.2: sink, x_1, y_1, ..., x_N, y_N, x_test)."""
    if isinstance(con, DecoderConstruction):
        N = con.assumptions["N"]
        return "causal", N, ["sink"] + token_roles(N)[:-2] + ["x_test"]
    return "encoder", con.pos.shape[0] - 1, con.token_roles()


def construction_meta(con: Construction) -> dict:
    w, lay = con.weights, con.layout
    kind, N, roles = _prompt_kind(con)
    n = len(roles)
    layers = {s: [{"name": l.name, "mask": l.mask, "heads": [h.name for h in l.heads],
                   "ffn": l.ffn is not None} for l in getattr(w, s)] for s in STACKS}
    return {"layout": {"dim": lay.dim, "rows": lay.labels(), **{"blocks": lay.to_json()["blocks"]}},
            "layers": layers,
            "prompt": {"kind": kind, "N": N, "n_tokens": n, "token_roles": roles,
                       "pos": np.asarray(con.pos, float).tolist()},
            "construction": _class_meta(con),
            "readout": {"answer": _readout_json(con.answer, lay, n),
                        "iterate": _readout_json(con.iterate, lay, n)},
            "notes": _plain(w.notes), "assumptions": _plain(con.assumptions)}


def _class_meta(con: Construction) -> dict:
    """The Construction's class ("module:QualName", whose ``encode`` is the prompt encoder) and the
    values of the fields a subclass adds, so that ``load_construction`` rebuilds the same encoder."""
    base = {f.name for f in fields(Construction)}
    extra = {f.name: getattr(con, f.name) for f in fields(con) if f.name not in base} if is_dataclass(con) else {}
    return {"class": f"{type(con).__module__}:{type(con).__qualname__}", "fields": _plain(extra)}


def _construction_class(meta: dict):
    """The recorded class if it imports and is a Construction, else Construction (plain regression encoder)."""
    module, _, name = meta.get("class", "").partition(":")
    # An export is data: importing a module it names would run that module's code. Only this
    # package's own modules, or modules already imported (a plug-in's, once the user has loaded it),
    # are looked up; anything else reads as the plain regression Construction.
    if not (module == "constructions" or module.startswith("constructions.") or module in sys.modules):
        return Construction
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return Construction
    return cls if isinstance(cls, type) and issubclass(cls, Construction) else Construction


def _plain(d: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in d.items()}


def export_construction(con: Construction, path: str | Path) -> tuple[Path, Path]:
    """The constructed weights exactly as the bridge loads them (float64), with their layout."""
    return export_model(build_model(con.weights), path, construction_meta(con))


def decoder_meta(n_points: int) -> dict:
    """Prompt and read-out of the trained models (decoder prompts of ``algoformer.training.prompts``):
    x_1, y_1, ..., x_N, y_N as 2N tokens; the read-out at the token of x_i predicts y_i from the
    samples before it, so a query x is answered by putting it in the x slot after the samples."""
    return {"prompt": {"kind": "decoder", "N": n_points, "n_tokens": 2 * n_points,
                       "token_roles": token_roles(n_points)[:-2]},
            "readout": {"answer": {"output": "read_out", "tokens": list(range(0, 2 * n_points, 2)),
                                   "predicts": "y_i at the token of x_i, from samples 1..i-1"}}}


def export_run(run_dir: str | Path, path: str | Path) -> tuple[Path, Path]:
    """A training run's checkpoint (``algoformer.train``) with its training configuration and where its
    answers are read. A run from scratch on a regression task gets the decoder prompt (``decoder_meta``).
    A run started from a construction (``--init-from``) reads the construction's own prompt: its export
    holds that construction's layout, prompt (token roles, Lemma A.1 vectors) and read-out registers,
    rebuilt through the same plug-in as the run, so ``load_construction`` encodes prompts for it and
    ``load_model`` returns the fine-tuned model (its trained ``read_out`` reads the answer register)."""
    from algoformer.evaluate import load_run
    from algoformer.training import initialisers
    cfg, model, step = load_run(run_dir)
    extra = {"training": cfg.to_dict(), "step": step}
    if cfg.init_from is not None:
        con, _ = initialisers.load(cfg.init_from).construction(cfg)
        meta = construction_meta(con)
        meta["readout"]["answer"]["output"] = ("read_out: Linear(D, 1) at these tokens, trained; it started as "
                                               "the exact selection of this register")
        meta["notes"] = {**meta["notes"], "init_from": cfg.init_from,
                         "fine_tuned": f"{step} training steps from the {cfg.init_from} construction"}
        extra.update(meta)
    elif cfg.task in ("linear", "representation"):
        extra.update(decoder_meta(cfg.n_points))
    return export_model(model, path, extra)


# -- import -----------------------------------------------------------------------------------------
# Both files are checked before use (``export_check``): a damaged export raises ExportError, one line
# naming the file and the tensor.
def read_meta(path: str | Path) -> dict:
    return read_json(_paths(path)[1])


def load_model(path: str | Path, dtype: torch.dtype | None = None) -> tuple[AlgoFormer, dict]:
    """A fresh AlgoFormer built from the JSON config, holding the exported tensors (eval mode)."""
    meta, cfg, state = load_checked(*_paths(path))
    dtype = dtype or next(iter(state.values())).dtype
    model = AlgoFormer(cfg).to(dtype)
    model.load_exact(state)
    return model.eval(), meta


def _readout_from_json(r: dict) -> Readout:
    return Readout(r["register"], r["tokens"][0] if r["scalar_token"] else list(r["tokens"]))


def _layer_from_state(state: dict, prefix: str, info: dict, D: int) -> LayerWeights:
    heads = []
    if prefix + "attn.w_q" in state:
        q, k, v, o = (state[prefix + "attn." + n].double().numpy() for n in ("w_q", "w_k", "w_v", "w_o"))
        r = v.shape[1]
        for i, name in enumerate(info["heads"]):
            heads.append(HeadWeights(q[i], k[i], o[:, i * r:(i + 1) * r] @ v[i], name))   # W_O^h W_V^h
    ffn = None
    if prefix + "ffn.fc1.weight" in state:
        ffn = FFNWeights(*(state[prefix + n].double().numpy()
                           for n in ("ffn.fc1.weight", "ffn.fc1.bias", "ffn.fc2.weight", "ffn.fc2.bias")))
    return LayerWeights(tuple(heads), ffn, info["mask"], info["name"])


def load_construction(path: str | Path) -> Construction:
    """The Construction back from an export: layout, weights (each head's value map is W_O^h W_V^h,
    exact because W_V^h selects rows), Lemma A.1 vectors, read-outs, and its class (its encoder)."""
    st, js = _paths(path)
    meta, _, state = load_checked(st, js)
    if meta.get("layout") is None:
        raise ExportError(f"{st} holds no layout: it is not a construction (use load_model)")
    lay = Layout()
    for name, (a, b) in meta["layout"]["blocks"].items():
        lay.add(name, b - a)
    stacks = {s: tuple(_layer_from_state(state, f"{s}.{i}.", info, lay.dim)
                       for i, info in enumerate(meta["layers"][s])) for s in STACKS}
    weights = AlgoFormerWeights(lay, **stacks, notes=meta.get("notes", {}))
    recorded = meta.get("construction", {})
    cls = _construction_class(recorded)
    if cls is Construction and meta["prompt"].get("kind") == "causal":    # exports without the class record
        cls = DecoderConstruction
    extra = recorded.get("fields", {}) if cls is not Construction else {}
    return cls(weights, np.asarray(meta["prompt"]["pos"], float),
               answer=_readout_from_json(meta["readout"]["answer"]),
               iterate=_readout_from_json(meta["readout"]["iterate"]),
               assumptions=meta.get("assumptions", {}), **extra)
