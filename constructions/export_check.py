"""Checking an export (``constructions.export``: ``NAME.safetensors`` + ``NAME.json``) before use.

Reading an export runs no code: safetensors is a JSON header and raw little-endian bytes, and the
meaning is plain JSON. What can go wrong is damage, and a damaged export must not load as
plausible weights nor fail with a traceback deep in a loader. ``load_checked`` therefore reads the
safetensors header itself first (an 8-byte length, then JSON naming each tensor's dtype, shape and
byte range), and checks, naming the file and, where there is one, the tensor:

- the header: complete, valid JSON, every tensor's byte range the size its dtype and shape need,
  the ranges back to back and ending where the file ends (a file cut at any byte names the tensor
  whose bytes the cut falls in, or the header entry it falls in);
- the JSON: valid, the export format and version, a model_config that builds an AlgoFormerConfig
  and equals the copy stored in the safetensors header (the two files belong together);
- the tensors against that config: the same names and shapes as the AlgoFormer it builds (built on
  the meta device: no memory), the export's dtype, finite values;
- for constructions, the layout against the width: the blocks tile [0, D) in order, the row labels
  are D, each read-out's register is a block with the same rows and its tokens are indices;
  the per-layer records match the config (head count, mask, FFN); the Lemma A.1 vectors fit the
  ``pos`` block.

Every failure is one ``ExportError`` (a ValueError) line.
"""
from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file

from algoformer import AlgoFormer, AlgoFormerConfig

STACKS = ("pre", "loop", "post")
FORMAT, VERSION = "algoformer-export", 1
DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
          "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
          "U8": ("uint8", 1), "BOOL": ("bool", 1)}
MAX_HEADER = 100_000_000               # safetensors' own limit on the header size


class ExportError(ValueError):
    """A damaged or inconsistent export: one line naming the file (and the tensor)."""


def _fail(where: Path, what: str):
    raise ExportError(f"{where}: {what}")


# -- the safetensors header ------------------------------------------------------------------------
def read_header(st: Path) -> tuple[dict, dict]:
    """(tensor name -> {"dtype", "shape", "data_offsets"}, metadata), every byte range checked."""
    if not st.is_file():
        _fail(st, "no such file (an export is NAME.safetensors with NAME.json)")
    size = st.stat().st_size
    with open(st, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            _fail(st, f"is truncated: {size} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:
            _fail(st, f"is not a safetensors file: its first 8 bytes declare a {n}-byte header")
        raw = f.read(n)
    if len(raw) < n:
        _fail(st, f"is truncated inside its {n}-byte header ({size} bytes in all): the cut falls {_where(raw)}")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(st, f"its header is not valid JSON ({e})")
    if not isinstance(header, dict):
        _fail(st, "its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    data = size - 8 - n
    entries, end = sorted(header.items(), key=lambda kv: _offsets(st, *kv)[0]), 0
    for name, e in entries:
        a, b = _offsets(st, name, e)
        if e.get("dtype") not in DTYPES:
            _fail(st, f"tensor {name!r} has dtype {e.get('dtype')!r}, expected one of {', '.join(DTYPES)}")
        shape = e.get("shape")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            _fail(st, f"tensor {name!r} has shape {shape!r}, expected a list of integers >= 0")
        need = math.prod(shape) * DTYPES[e["dtype"]][1]
        if b - a != need:
            _fail(st, f"tensor {name!r}: shape {shape} of {e['dtype']} needs {need} bytes, its byte range "
                      f"[{a}, {b}) holds {b - a} (the header was changed)")
        if a != end:
            _fail(st, f"tensor {name!r} starts at data byte {a}, the previous tensor ends at {end}")
        if b > data:
            _fail(st, f"is truncated ({size} bytes): tensor {name!r} needs data bytes [{a}, {b}), the file "
                      f"holds {max(data, 0)}")
        end = b
    if end != data:
        _fail(st, f"has {data - end} bytes after its last tensor (the header says the data ends at {end})")
    return dict(header), meta


def _where(raw: bytes) -> str:
    """Where a header cut at the end of ``raw`` falls: in or after the last entry whose name is whole
    (a top-level key is '"NAME":{'; inside the metadata string every quote is escaped)."""
    keys = [m for m in re.finditer(rb'"([^"\\]+)":\{', raw) if m.group(1) != b"__metadata__"]
    if not keys:
        return "before any tensor entry"
    last = keys[-1]
    name = last.group(1).decode(errors="replace")
    return f"{'after' if b'}' in raw[last.end():] else 'in'} the entry of tensor {name!r}"


def _offsets(st: Path, name: str, e) -> tuple[int, int]:
    off = e.get("data_offsets") if isinstance(e, dict) else None
    if not (isinstance(off, list) and len(off) == 2 and all(isinstance(x, int) for x in off) and 0 <= off[0] <= off[1]):
        _fail(st, f"tensor {name!r} has data_offsets {off!r}, expected [start, stop] with 0 <= start <= stop")
    return off[0], off[1]


# -- the JSON ---------------------------------------------------------------------------------------
def read_json(js: Path) -> dict:
    if not js.is_file():
        _fail(js, "no such file (an export is NAME.safetensors with NAME.json)")
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(js, f"is not valid JSON ({e})")
    if not isinstance(meta, dict):
        _fail(js, f"holds a JSON {type(meta).__name__}, expected an object")
    if meta.get("format") != FORMAT:
        raise ExportError(f"{js} is not an {FORMAT} file (format={meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ExportError(f"{js} has version {meta.get('version')!r}; this reader knows version {VERSION}")
    return meta


def model_config(js: Path, meta: dict, header_meta: dict, st: Path) -> AlgoFormerConfig:
    from .export import config_from_json          # export imports this module
    d = meta.get("model_config")
    try:
        cfg = config_from_json(d)
        cfg.d_model
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        _fail(js, f"model_config is invalid ({type(e).__name__}: {e})")
    try:
        stored = json.loads(header_meta["algoformer"])["model_config"]
    except (KeyError, TypeError, json.JSONDecodeError):
        _fail(st, "its header holds no algoformer metadata (model_config): not written by constructions.export")
    if stored != d:
        _fail(js, f"model_config differs from the one stored in {st.name}'s header: the two files are not one export")
    return cfg


def _int(v, lo: int, hi: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)


def check_layout(js: Path, meta: dict, cfg: AlgoFormerConfig) -> None:
    lay, D = meta["layout"], cfg.d_model
    if not isinstance(lay, dict) or lay.get("dim") != D:
        _fail(js, f"layout dim={lay.get('dim') if isinstance(lay, dict) else lay!r} is invalid: expected the width D={D}")
    blocks = lay.get("blocks")
    if not isinstance(blocks, dict) or not blocks:
        _fail(js, "layout blocks is not a non-empty object of register -> [start, stop]")
    end = 0
    for name, ab in blocks.items():
        if not (isinstance(ab, list) and len(ab) == 2 and _int(ab[0], 0) and _int(ab[1], 0)):
            _fail(js, f"layout block {name!r} = {ab!r} is invalid: expected [start, stop]")
        if ab[1] > D or ab[0] >= ab[1]:
            _fail(js, f"layout block {name!r} = {ab} lies outside the width D={D} (expected 0 <= start < stop <= {D})")
        if ab[0] != end:
            _fail(js, f"layout block {name!r} = {ab} does not start where the previous block ends ({end})")
        end = ab[1]
    if end != D:
        _fail(js, f"layout blocks end at row {end}, the width is D={D}")
    rows = lay.get("rows")
    if not (isinstance(rows, list) and len(rows) == D and all(isinstance(r, str) for r in rows)):
        _fail(js, f"layout rows is invalid: expected {D} row labels, got {len(rows) if isinstance(rows, list) else rows!r}")
    layers = meta.get("layers")
    for s in STACKS:
        got, want = (layers or {}).get(s), getattr(cfg, s)
        if not (isinstance(got, list) and len(got) == len(want)):
            _fail(js, f"layers[{s!r}] is invalid: expected {len(want)} layer records, as model_config has")
        for i, (info, c) in enumerate(zip(got, want)):
            ok = isinstance(info, dict) and isinstance(info.get("heads"), list) and len(info["heads"]) == c.n_heads \
                and info.get("mask") == c.mask and info.get("ffn") == (c.d_ff > 0) and isinstance(info.get("name"), str)
            if not ok:
                _fail(js, f"layers[{s!r}][{i}] does not match model_config ({c.n_heads} heads, mask {c.mask!r}, "
                          f"ffn {c.d_ff > 0})")
    prompt = meta.get("prompt")
    if not (isinstance(prompt, dict) and _int(prompt.get("N"), 1) and prompt.get("n_tokens") == 2 * prompt["N"] + 2):
        _fail(js, "prompt is invalid: expected N >= 1 and n_tokens = 2N + 2 (the encoder prompt)")
    pos = prompt.get("pos")
    width = blocks["pos"][1] - blocks["pos"][0] if "pos" in blocks else None
    n_pos = prompt["N"] + (2 if prompt.get("kind") == "causal" else 1)   # the causal prompt: P_0 .. P_{N+1}
    if not (isinstance(pos, list) and len(pos) == n_pos and all(
            isinstance(r, list) and (width is None or len(r) == width)
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in r) for r in pos)):
        _fail(js, f"prompt pos is invalid: expected {n_pos} finite rows (N = {prompt['N']}, {prompt.get('kind')} prompt)"
                  + (f" of the pos block's {width} entries" if width is not None else ""))
    for key in ("answer", "iterate"):
        r = (meta.get("readout") or {}).get(key)
        if not (isinstance(r, dict) and r.get("register") in blocks):
            _fail(js, f"readout {key!r} names no register of the layout ({r.get('register') if isinstance(r, dict) else r!r})")
        if r.get("rows") != blocks[r["register"]]:
            _fail(js, f"readout {key!r}: rows {r.get('rows')!r} differ from the block of {r['register']!r} "
                      f"{blocks[r['register']]}")
        # token indices >= 0, not bounded by n_tokens: the prompt section describes the encoder
        # prompt (2N + 2 tokens) even for constructions with longer prompts (cot), and a model
        # without a positional table reads prompts of any length
        _check_tokens(js, f"readout {key!r}", r.get("tokens"), None)
        if not isinstance(r.get("scalar_token"), bool) or (r["scalar_token"] and len(r["tokens"]) != 1):
            _fail(js, f"readout {key!r}: scalar_token={r.get('scalar_token')!r} is invalid: expected a boolean, "
                      "true only with one token")


def _check_tokens(js: Path, what: str, tokens, n: int | None) -> None:
    if not (isinstance(tokens, list) and tokens and all(_int(t, 0, None if n is None else n - 1) for t in tokens)):
        allowed = "integers >= 0" if n is None else f"in [0, {n})"
        _fail(js, f"{what}: tokens {tokens!r} are invalid: expected a non-empty list of token indices {allowed}")


def check_decoder(js: Path, meta: dict) -> None:
    """A trained run's prompt and read-out (``export.decoder_meta``), when the export has them."""
    prompt = meta.get("prompt")
    if not isinstance(prompt, dict):
        return
    if not (_int(prompt.get("n_tokens"), 1) and isinstance(prompt.get("token_roles"), list)
            and len(prompt["token_roles"]) == prompt["n_tokens"]):
        _fail(js, "prompt is invalid: expected n_tokens >= 1 and one token role per token")
    answer = (meta.get("readout") or {}).get("answer")
    if isinstance(answer, dict) and "tokens" in answer:
        _check_tokens(js, "readout 'answer'", answer["tokens"], prompt["n_tokens"])


# -- the tensors against the config ---------------------------------------------------------------
def check_tensors(st: Path, entries: dict, meta: dict, cfg: AlgoFormerConfig) -> None:
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in AlgoFormer(cfg).state_dict().items()}
    for name, shape in own.items():
        if name not in entries:
            _fail(st, f"tensor {name!r} of shape {shape} is missing (the JSON's model_config has it)")
    dtypes = meta.get("dtype")
    dtypes = [dtypes] if isinstance(dtypes, str) else dtypes
    for name, e in entries.items():
        if name not in own:
            _fail(st, f"tensor {name!r} is not in the model the JSON's model_config builds")
        if tuple(e["shape"]) != own[name]:
            _fail(st, f"tensor {name!r} has shape {tuple(e['shape'])}, the JSON's model_config gives {own[name]}")
        if not isinstance(dtypes, list) or DTYPES[e["dtype"]][0] not in dtypes:
            _fail(st, f"tensor {name!r} has dtype {DTYPES[e['dtype']][0]}, the JSON says {meta.get('dtype')!r}")


def load_checked(st: Path, js: Path) -> tuple[dict, AlgoFormerConfig, dict[str, torch.Tensor]]:
    """(meta, config, tensors) of an export, everything checked (module docstring)."""
    entries, header_meta = read_header(st)
    meta = read_json(js)
    cfg = model_config(js, meta, header_meta, st)
    if meta.get("layout") is not None:
        check_layout(js, meta, cfg)
    else:
        check_decoder(js, meta)
    check_tensors(st, entries, meta, cfg)
    try:
        state = load_file(str(st))
    except Exception as e:                  # the header was checked; any failure left is one line
        _fail(st, f"cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            _fail(st, f"tensor {name!r} holds {int((~torch.isfinite(t)).sum())} non-finite values (NaN or inf)")
    return meta, cfg, state
