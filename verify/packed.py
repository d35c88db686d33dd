"""The sweep's fast emulation: the model's numbers, bit for bit, with the zeros of the weights skipped.

``emulate_many(cons, problem, iters, dtype, device)`` returns what ``emulate.emulate`` returns for
each construction (``every_prediction=False``) with one intra-op thread, for constructions of one
structure (one algorithm and variant, one or more temperatures). It runs Eq. 1 itself, from the
tensors that ``constructions.bridge.state_dict`` loads into the model, with these changes:

  * a product reads only the stream columns its weight reads (the nonzero columns of W_Q, W_K, W_1)
    and writes only the rows its map writes (nonzero rows of W_O, W_2, b_2): the constructed maps
    read ~20-40 of D ~ 140 columns and write ~20;
  * the attention runs head by head: scores from strided views of the joint query and key products,
    values as a view of the stream (W_V is a 0/1 selection), no transpose copies and no gathers;
  * the problems run in chunks, one per core, each on its own thread with one intra-op thread
    (``ChunkPool``, which concurrent sweep groups share): problems never interact in Eq. 1;
  * temperature can be a batch dimension: the stream is (T, B*n, D) and every weight (T, ...).

A dropped term is an exact zero, but the BLAS kernel that sums the rest is chosen by the shapes:
this CPU's float64 kernels sum the inner dimension in interleaved lanes, treat a partial tile of
output rows and a short M apart, and (on two threads) split a long inner dimension. ``_product``
therefore probes each candidate restriction (the nonzero columns or their aligned pairs; the rows,
or the aligned tiles of 4-32 that hold them) on random data: the model's own call on the whole batch
against the candidate on each chunk, once per shape, and keeps the cheapest that agrees bit for bit
(else the model's call, and the run is not chunked). ``_core_agrees`` probes the per-head core the
same way. A construction whose stream holds a non-finite value (which the model's dense products
spread as NaN) is rerun on the model. ``tests/test_packed.py`` checks sweeps and runs against the
model bit for bit; ``supported(con)`` says whether a construction runs here (softmax attention,
ReLU, no norm). docs/verifier-speed.md has the measurements.
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from constructions.bridge import model_config, state_dict
from constructions.prompt import Construction

from .emulate import attention_dtype, emulate, resolve_dtype, tf32_matmuls
from .references import Trajectory

_UP: dict = {None: None, "float32": torch.float32, "float64": torch.float64}


def supported(con: Construction) -> bool:
    """Whether ``con`` runs packed: softmax attention (full or causal), ReLU FFNs, no norm."""
    cfg = model_config(con.weights)
    return all(l.scores == "softmax" and l.mask in ("full", "causal") and not l.pre_norm
               and l.activation == "relu" for l in cfg.pre + cfg.loop + cfg.post)


def _nonzero(a: np.ndarray, axis) -> np.ndarray:
    """Indices where some entry (over ``axis`` and over the T constructions) is nonzero or non-finite."""
    return np.flatnonzero(np.any((a != 0) | ~np.isfinite(a), axis=axis))


def _index(cols: np.ndarray, device):
    """A slice where the columns are one run (a view, no copy), else an index tensor."""
    cols = np.asarray(cols, np.int64)
    if len(cols) and np.array_equal(cols, np.arange(cols[0], cols[0] + len(cols))):
        return slice(int(cols[0]), int(cols[0]) + len(cols))
    return torch.from_numpy(cols).to(device)


def _take(h: torch.Tensor, ix) -> torch.Tensor:
    return h[:, :, ix] if isinstance(ix, slice) else h.index_select(2, ix)


def _add_(h: torch.Tensor, ix, out: torch.Tensor) -> None:
    """h[:, :, ix] += out, in place."""
    if isinstance(ix, slice):
        h[:, :, ix] += out
    else:
        h.index_add_(2, ix, out)


def _model_op(kind: tuple, x: torch.Tensor, w: torch.Tensor, b, B: int, n: int) -> torch.Tensor:
    """The model's own call (``algoformer.layer``) for one construction: x (B*n, K), w (N, K) -> (B*n, N)."""
    K, N = w.shape[1], w.shape[0]
    if kind[0] == "matmul":      # x: one construction's (B, H, n, r) pattern @ values, as the model has it
        return (x.transpose(1, 2).reshape(B, n, K) @ w.T).reshape(B * n, N)
    if kind[0] == "qk":
        q = torch.einsum("bnd,hkd->bhnk", x.reshape(B, n, K), w.reshape(kind[1], kind[2], K))
        return q.permute(0, 2, 1, 3).reshape(B * n, N)
    if kind[0] == "linear":
        return torch.nn.functional.linear(x.reshape(B, n, K), w, None if b is None else b.reshape(N)).reshape(B * n, N)
    raise ValueError(f"kind={kind!r} is invalid: expected qk, linear or matmul")


@dataclass
class _Product:
    """x[:, :, read] @ w^T (+ b) for the T constructions, the rows ``write`` of the model's product:
    one bmm (``batched``), or the model's own call per construction."""
    kind: tuple                 # ("qk", H, k) the queries/keys einsum, ("linear",) an FFN map, ("matmul",) W_O
    read: object                # slice or index tensor of the input columns kept
    write: object               # ... of the output rows kept
    w: torch.Tensor             # (T, |write|, |read|), the model's (out, in) layout
    b: torch.Tensor | None      # (T, 1, |write|)
    batched: bool
    B: int
    n: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: the stream (T, B*n, K); for W_O ("matmul") the (T*B, H, n, r) pattern @ values, whose
        head-concatenated form the model multiplies in the layout its reshape leaves (a view for r = 1)."""
        if self.kind[0] == "matmul":
            T = x.shape[0] // self.B
            if not self.batched:
                z = x.view(T, self.B, *x.shape[1:])
                return torch.stack([_model_op(self.kind, z[t], self.w[t], None, self.B, self.n) for t in range(T)])
            x = x.transpose(1, 2).reshape(T, self.B * self.n, -1)
        x = _take(x, self.read)
        if self.batched:
            wt = self.w.transpose(1, 2)
            return torch.baddbmm(self.b, x, wt) if self.b is not None else torch.bmm(x, wt)
        return torch.stack([_model_op(self.kind, x[t], self.w[t], None if self.b is None else self.b[t],
                                      self.B, self.n) for t in range(x.shape[0])])

    def shape(self) -> tuple[int, int, int, int]:
        """(batch, M, K, N) of the product it runs (the model's call per construction: the same FLOPs)."""
        T, N, K = self.w.shape
        return T, self.B * self.n, K, N


_PROBES: dict = {}
_LOCKS: dict = {}
_LOCKS_LOCK = threading.Lock()


def _lock(key) -> threading.Lock:
    """One lock per probe key: threads that pack wait only for a probe of the same key."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(key, threading.Lock())


def _pairs(cols: np.ndarray, K: int) -> np.ndarray:
    """The columns widened to whole aligned pairs (a kernel that sums the inner dimension in two
    interleaved lanes keeps every term in its lane); an odd K keeps its last column last (the tail)."""
    p = np.unique(np.concatenate([cols // 2 * 2, cols // 2 * 2 + 1]))
    p = p[p < K - K % 2]
    return np.concatenate([p, [K - 1]]).astype(np.int64) if K % 2 else p


def _blocks(rows: np.ndarray, N: int, t: int) -> np.ndarray:
    """The rows widened to whole aligned blocks of t (a kernel's tile of output rows), the last, partial
    block whole: each kept row then sits at the same place of a tile of the same kind as before."""
    starts = np.unique(rows // t) * t
    return np.unique(np.concatenate([np.arange(s, min(s + t, N)) for s in starts])).astype(np.int64)


def _product(kind: tuple, w: np.ndarray, b: np.ndarray | None, cols, rows, B: int, n: int, dtype, device,
             compute=None, part: tuple = ()) -> _Product:
    """The packed product of the weights w (T, N, K) (bias b (T, N)) for a chunk of B problems that
    reads only the columns ``cols`` and writes the rows ``rows`` where that gives the model's product
    bit for bit. ``part`` = (B_all, starts): the chunk is problems [s, s + B) of the B_all that the
    model multiplies at once, for each s in starts (default: the whole batch, (B, (0,))).

    Kernels are chosen by shape and may sum the inner dimension in another order (and this CPU's MKL
    treats a partial tile of rows, or a short M, apart), so each candidate (the nonzero columns, their
    aligned pairs or all; the nonzero rows, widened to aligned tiles of 4 to 32, or all; in one bmm;
    the cheapest first) is probed once per (kind, sizes, chunks, zero pattern, dtype, device): random
    data with this zero pattern, the model's call on all B_all problems against the candidate on each
    chunk. The first that agrees on every chunk is used; else the model's call per construction, which
    is exact only for the whole batch (``batched`` False: ``Packed.run`` then runs it unchunked).
    (The probe runs one construction, the real sizes: the kernel is chosen by the matrix shapes.)"""
    T, N, K = w.shape
    compute = compute or dtype
    ref_B, starts = part or (B, (0,))
    cols, rows = np.asarray(cols, np.int64), np.asarray(rows, np.int64)
    key = (kind, B, ref_B, tuple(starts), n, K, N, cols.tobytes(), rows.tobytes(), dtype, compute, str(device))
    make = lambda kc, nc, batched, ww, bb, BB=B: _Product(
        kind, _index(kc, device), _index(nc, device),
        torch.from_numpy(np.ascontiguousarray(ww[:, nc][:, :, kc])).to(dtype=dtype, device=device).to(compute),
        None if bb is None else torch.from_numpy(np.ascontiguousarray(bb[:, None, nc])).to(
            dtype=dtype, device=device).to(compute), batched, BB, n)
    with _lock(key):                 # the probe cache is shared by the threads that pack
        if key not in _PROBES:
            _probe_product(key, kind, make, b, cols, rows, B, ref_B, starts, n, K, N, dtype, compute, device)
        if len(_PROBES[key]) == 3:   # the chosen restriction's indices, formed once
            kc, nc = _PROBES[key][:2]
            _PROBES[key] += (_index(kc, device), _index(nc, device), _index(kc, "cpu"), _index(nc, "cpu"))
    batched = _PROBES[key][2]
    read, write, kn, nn = _PROBES[key][3:]
    as_t = lambda a: torch.from_numpy(a).to(dtype=dtype, device=device).to(compute)
    ww = w[:, nn] if isinstance(nn, slice) else w[:, nn.numpy()]
    ww = ww[:, :, kn] if isinstance(kn, slice) else ww[:, :, kn.numpy()]
    bb = None if b is None else (b[:, None, nn] if isinstance(nn, slice) else b[:, None, nn.numpy()])
    return _Product(kind, read, write, as_t(np.ascontiguousarray(ww)),
                    None if bb is None else as_t(np.ascontiguousarray(bb)), batched, B, n)


_NOISE: dict = {}


def _noise(shape: tuple, stream: int) -> np.ndarray:
    """Seeded standard-normal probe data of this shape (a fresh, writable copy): drawn once per
    stream and reused (a prefix of a longer draw), since drawing it cost more than the probes' matmuls."""
    size = int(np.prod(shape))
    with _LOCKS_LOCK:
        have = _NOISE.get(stream)
        if have is None or have.size < size:
            grow = max(size, 2 * (0 if have is None else have.size))
            _NOISE[stream] = have = np.random.default_rng(stream).standard_normal(grow)
    return have[:size].reshape(shape).copy()


def _probe_product(key, kind, make, b, cols, rows, B, ref_B, starts, n, K, N, dtype, compute, device) -> None:
    """``_product``'s probe: sets _PROBES[key] to (kept columns, kept rows, batched)."""
    every_k, every_n = np.arange(K), np.arange(N)
    _PROBES[key] = (every_k, every_n, False)
    # one construction: a bmm computes each of its T matrices alone, as the model's call does
    pw, pb = _noise((1, N, K), 0), _noise((1, N), 1)
    px = _noise((1, ref_B * n, K), 2)
    pw[:, :, np.setdiff1d(every_k, cols)] = 0.0
    pw[:, np.setdiff1d(every_n, rows)] = 0.0
    pb[:, np.setdiff1d(every_n, rows)] = 0.0
    if kind[0] != "matmul":
        px[:, :, np.setdiff1d(every_k, cols)] = 0.0
    pb = None if b is None else pb
    # the stream holds storage-dtype values; pattern @ values (W_O's input) is formed in the compute dtype
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device=device).to(
        compute if kind[0] == "matmul" else dtype).to(compute)
    if kind[0] == "matmul":      # (B, H, n, r), contiguous as the pattern @ values product leaves it
        px = px.reshape(ref_B, n, kind[1], K // kind[1]).transpose(0, 2, 1, 3)
        chunk = lambda s: to_t(px[s:s + B])
    else:
        chunk = lambda s: to_t(px[:, s * n:(s + B) * n])
    exact = make(every_k, every_n, False, pw, pb, ref_B)(to_t(px))
    xs = [(s, chunk(s)) for s in starts]
    ks = [cols, _pairs(cols, K), every_k]
    ns = [rows] + [_blocks(rows, N, t) for t in (4, 8, 12, 16, 24, 32)] + [every_n]
    tried = set()
    for kc, nc in sorted(((kc, nc) for kc in ks for nc in ns), key=lambda c: len(c[0]) * len(c[1])):
        if (kc.tobytes(), nc.tobytes()) in tried:
            continue
        tried.add((kc.tobytes(), nc.tobytes()))
        cand, ix = make(kc, nc, True, pw, pb), torch.from_numpy(nc).to(device)
        if all(torch.equal(cand(x), exact[:, s * n:(s + B) * n][:, :, ix]) for s, x in xs):
            _PROBES[key] = (kc, nc, True)
            break


@dataclass
class _Layer:
    mask: str
    up: torch.dtype | None          # the attention's wider dtype, where it is wider than the stream's
    q: _Product | None = None
    k: _Product | None = None
    H: int = 0
    v_cols: object = None           # index of the stream column each value row selects (W_V)
    v_heads: list | None = None     # per head, its value columns (slice or index): the per-head core
    o: _Product | None = None
    fc1: _Product | None = None
    fc2: _Product | None = None

    def matmuls(self, core: bool = True) -> list[tuple[int, int, int, int]]:
        """(batch, M, K, N) of every matmul this layer runs: its products, and (``core``) the scores and
        pattern @ values."""
        out = [p.shape() for p in (self.q, self.k, self.o, self.fc1, self.fc2) if p is not None]
        if self.H and core:
            T, Hk, _ = self.q.w.shape
            H, B, n = self.H, self.q.B, self.q.n
            out += [(T * B * H, n, Hk // H, n), (T * B * H, n, n, self.o.w.shape[2] // H)]
        return out


def _pack_layer(sds: list[dict], prefix: str, cfg, dtype, device, B: int, n: int, part: tuple = ()) -> _Layer:
    L = _Layer(mask=cfg.mask, up=None)
    get = lambda name: np.stack([sd[prefix + name].numpy() for sd in sds])   # (T, ...)
    if cfg.n_heads > 0:
        up = _UP[cfg.attention_dtype]
        L.up = up if up is not None and torch.finfo(up).eps < torch.finfo(dtype).eps else None
        wq, wk, wv, wo = get("attn.w_q"), get("attn.w_k"), get("attn.w_v"), get("attn.w_o")
        T, H, k, D = wq.shape
        read = np.union1d(_nonzero(wq, (0, 1, 2)), _nonzero(wk, (0, 1, 2)))
        L.H = H
        sel = wv.reshape(T, -1, D)                                   # (T, H*r, D), 0/1 selections
        if np.any((sel != 0) & (sel != 1)) or np.any((sel != 0).sum(-1) > 1) or np.any(sel != sel[:1]):
            raise ValueError("w_v is not one selection shared by the constructions (constructions.bridge)")
        cols = np.where(sel[0].any(-1), sel[0].argmax(-1), 0)                   # padded rows: W_O is 0
        r = cols.size // H
        every = np.arange(H * k)
        L.q = _product(("qk", H, k), wq.reshape(T, H * k, D), None, read, every, B, n, dtype, device, L.up, part)
        L.k = _product(("qk", H, k), wk.reshape(T, H * k, D), None, read, every, B, n, dtype, device, L.up, part)
        L.v_cols = _index(cols, device)
        if L.q.batched and L.k.batched and _core_agrees(T, B, H, n, k, r, D, cfg.mask, cols, L.up or dtype, device, part):
            L.v_heads = [_index(cols[i * r:(i + 1) * r], device) for i in range(H)]
        L.o = _product(("matmul", H), wo, None, np.arange(wo.shape[2]), _nonzero(wo, (0, 2)), B, n, dtype,
                       device, L.up, part)
    if cfg.d_ff > 0:
        w1, b1, w2, b2 = get("ffn.fc1.weight"), get("ffn.fc1.bias"), get("ffn.fc2.weight"), get("ffn.fc2.bias")
        L.fc1 = _product(("linear",), w1, b1, _nonzero(w1, (0, 1)), np.arange(w1.shape[1]), B, n, dtype, device,
                         part=part)
        write = np.union1d(_nonzero(w2, (0, 2)), _nonzero(b2, 0))
        L.fc2 = _product(("linear",), w2, b2, np.arange(w2.shape[2]), write, B, n, dtype, device, part=part)
    return L


class Packed:
    """T constructions of one structure as batched, column-restricted weights (see the module doc)."""

    def __init__(self, cons: list[Construction], dtype: torch.dtype | str = torch.float64, device: str = "cpu"):
        if not cons:
            raise ValueError("cons is empty: expected at least one construction")
        cfgs = [model_config(c.weights) for c in cons]
        if any(c != cfgs[0] for c in cfgs[1:]):
            raise ValueError("the constructions differ in structure (layers, heads, widths): pack them apart")
        if not supported(cons[0]):
            raise ValueError("only softmax attention, ReLU FFNs and no norm run packed (verify.emulate otherwise)")
        self.cons, self.device = cons, device
        self.name, self.upcast = dtype, attention_dtype(dtype)
        self.dtype, self.tf32 = resolve_dtype(dtype)
        self._cfg = model_config(cons[0].weights, attention_dtype=self.upcast)
        self._sds = [state_dict(c.weights) for c in cons]
        self._packed: dict = {}

    def stacks(self, B: int, n: int, part: tuple = ()) -> dict:
        """The packed layers for chunks of B problems of n tokens; ``part`` = (B_all, starts): the
        chunks' places in the batch that the model runs at once (``_product``; default: the whole)."""
        part = part or (B, (0,))
        if (B, n, part) not in self._packed:
            self._packed[B, n, part] = {
                s: [_pack_layer(self._sds, f"{s}.{i}.", lc, self.dtype, self.device, B, n, part)
                    for i, lc in enumerate(getattr(self._cfg, s))] for s in ("pre", "loop", "post")}
        return self._packed[B, n, part]

    def matmuls(self, B: int, n: int, iters: int, core: bool = True) -> list[tuple[int, int, int, int, int]]:
        """(count, batch, M, K, N) of the matmuls one ``run`` over B problems and ``iters`` loops does
        (``flops``: 2 per multiply-add; the softmax, ReLU and adds are not counted); without ``core``
        the products only, not the attention's scores and pattern @ values."""
        stacks = self.stacks(B, n)
        count = {"pre": 1, "loop": iters, "post": 1}
        return [(count[s], *m) for s in stacks for layer in stacks[s] for m in layer.matmuls(core)]

    def flops(self, B: int, n: int, iters: int) -> int:
        return sum(2 * c * b * m * k * nn for c, b, m, k, nn in self.matmuls(B, n, iters))

    def run(self, problem, iters: int, workers: int | None = None, pool: "ChunkPool | None" = None) -> list[Trajectory]:
        """The trajectories of the T constructions on ``problem``: the model's numbers with one
        intra-op thread (``emulate.emulate`` under ``torch.set_num_threads(1)``), bit for bit. On a CPU
        the problems are split into ``workers`` contiguous chunks (default: ``torch.get_num_threads()``),
        run in as many threads with one intra-op thread each: problems never interact in Eq. 1, and
        every product and attention core is probed on each chunk against the model's call on the whole
        batch, so two cores work on 2 x 82-token attention cores at once instead of splitting each
        small one. Where a probe finds no chunked form that agrees, the run is not chunked.
        ``pool``: run the chunks on this open ``ChunkPool`` (one per pool worker), which concurrent
        callers share, instead of on threads of this call's own."""
        if self.tf32 and torch.device(self.device).type != "cuda":
            raise ValueError(f"device={self.device!r} is invalid for tf32: TF32 matmuls need a CUDA device")
        B = len(problem.x)
        if pool is not None:
            workers = pool.workers
        elif workers is None:
            workers = torch.get_num_threads() if torch.device(self.device).type == "cpu" else 1
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"workers={workers!r} is invalid: expected an integer >= 1")
        chunks = [c for c in np.array_split(np.arange(B), min(workers, B)) if len(c)]
        n = self._n(problem)
        with contextlib.ExitStack() as stack:
            if pool is None:         # one intra-op thread, as in the sweep, also for one chunk
                pool = stack.enter_context(ChunkPool(len(chunks)))
            if len(chunks) > 1:      # pack and probe here, before the threads; unchunked unless exact
                packs = {len(c): self.stacks(len(c), n, (B, tuple(int(d[0]) for d in chunks if len(d) == len(c))))
                         for c in chunks}
                if not all(_chunkable(L) for st in packs.values() for layers in st.values() for L in layers):
                    chunks = [np.arange(B)]
            with tf32_matmuls(self.tf32), torch.no_grad():
                if len(chunks) == 1:
                    parts = [self._run(problem, iters, self.stacks(B, n))]
                else:
                    sub = lambda idx: type(problem)(*(getattr(problem, f)[idx[0]:idx[-1] + 1]
                                                      for f in ("x", "y", "x_test", "y_test")))
                    futures = [pool.submit(self._run_chunk, sub(idx), iters, packs[len(idx)]) for idx in chunks]
                    parts = [f.result() for f in futures]
            out = []
            for i, con in enumerate(self.cons):
                if any(p[2][i] for p in parts):  # the model's dense products spread a non-finite value as NaN
                    out.append(emulate(con, problem, iters, self.name, self.device, every_prediction=False))
                    continue
                out.append(Trajectory(np.concatenate([p[0][i] for p in parts]),
                                      np.concatenate([p[1][i] for p in parts])))
        return out

    def _run_chunk(self, problem, iters: int, stacks: dict):
        with torch.no_grad():                                # grad mode is per thread
            return self._run(problem, iters, stacks)

    def _n(self, problem) -> int:
        return self.cons[0].encode(problem.x[:1], problem.y[:1], problem.x_test[:1]).shape[1]

    def _run(self, problem, iters: int, stacks: dict) -> tuple[list, list, list]:
        """(iterates, predictions, non-finite) per construction, as numpy arrays and flags."""
        T = len(self.cons)
        tokens = [torch.from_numpy(c.encode(problem.x, problem.y, problem.x_test)) for c in self.cons]
        h = torch.stack(tokens).to(dtype=self.dtype, device=self.device)       # (T, B, n, D)
        _, B, n, D = h.shape
        h = h.reshape(T, B * n, D).contiguous()
        for layer in stacks["pre"]:
            _layer(layer, h, B, n)
        its = []                     # [loop][construction] the iterate read, copied (h changes in place)
        for t in range(iters + 1):
            if t > 0:
                for layer in stacks["loop"]:
                    _layer(layer, h, B, n)
            view = h.view(T, B, n, D)
            its.append([c.iterate.read(c.layout, view[i]).to(torch.float64, copy=True) for i, c in enumerate(self.cons)])
        # a stream entry, once non-finite, stays so (columns are only added to): one check at the end
        bad = ~torch.isfinite(h.view(T, -1)).all(-1)
        post = h.clone()
        for layer in stacks["post"]:
            _layer(layer, post, B, n)
        bad = (bad | ~torch.isfinite(post.view(T, -1)).all(-1)).cpu().tolist()
        post = post.view(T, B, n, D)
        iterates, preds = [], []
        for i, con in enumerate(self.cons):
            it = torch.stack([s[i] for s in its], 1).cpu()
            last = con.answer.read(con.layout, post[i]).to(torch.float64).cpu()
            pred = torch.full((B, iters + 1) + tuple(last.shape[1:]), float("nan"), dtype=torch.float64)
            pred[:, -1] = last
            iterates.append(it.numpy())
            preds.append(pred.numpy())
        return iterates, preds, bad


def _chunkable(L: _Layer) -> bool:
    """Whether the layer's packed chunk gives the model's numbers for the whole batch: every product
    found a restriction that agrees on every chunk, and so did the per-head attention core."""
    products = [p for p in (L.q, L.k, L.o, L.fc1, L.fc2) if p is not None]
    return all(p.batched for p in products) and (not L.H or L.v_heads is not None)


@contextlib.contextmanager
def intra_op_threads(threads: int | None):
    """torch's intra-op thread count set to ``threads`` inside (None: unchanged), restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ChunkPool:
    """Threads that run problem chunks (``Packed.run(..., pool=)``), shared by callers that run rows
    at once (``verify.sweep`` runs two (dtype, variant) groups side by side). While it is open torch
    runs one intra-op thread per calling thread (``torch.set_num_threads(1)``, restored on close): the
    parallelism is the chunks', so the two cores never split one small product."""

    def __init__(self, workers: int):
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"workers={workers!r} is invalid: expected an integer >= 1")
        self.workers = workers
        self._pool = None

    def __enter__(self) -> "ChunkPool":
        self._threads = intra_op_threads(1)
        self._threads.__enter__()
        self._pool = ThreadPoolExecutor(self.workers)
        return self

    def __exit__(self, kind, value, tb) -> None:
        # on an error or Ctrl-C the queued chunks are dropped: only the running ones are waited for
        self._pool.shutdown(wait=True, cancel_futures=kind is not None)
        self._pool = None
        self._threads.__exit__(None, None, None)

    def submit(self, fn, *args):
        if self._pool is None:
            raise RuntimeError("the ChunkPool is not open: use it as `with ChunkPool(workers) as pool:`")
        return self._pool.submit(fn, *args)


def _layer(L: _Layer, h: torch.Tensor, B: int, n: int) -> None:
    """TF(X) of Eq. 1 on the packed stream h (T, B*n, D), in place."""
    if L.H:
        _add_(h, L.o.write, _attention(L, h, B, n))
    if L.fc1 is not None:
        _add_(h, L.fc2.write, L.fc2(torch.relu_(L.fc1(h))))


def _attention(L: _Layer, h: torch.Tensor, B: int, n: int) -> torch.Tensor:
    T, H = h.shape[0], L.H
    x = h if L.up is None else h.to(L.up)          # the model casts the stream once, before the maps
    q, k = L.q(x), L.k(x)                              # (T, B*n, H*k)
    if L.v_heads is not None:
        z = _core_per_head(q, k, x, L.v_heads, n, L.mask)
    else:                                              # the model's layout: 4-D matmuls over (TB, H, ...)
        q = q.view(T * B, n, H, -1).transpose(1, 2)    # (TB, H, n, k)
        k = k.view(T * B, n, H, -1).transpose(1, 2)
        v = _take(x, L.v_cols)
        r = v.shape[-1] // H
        v = v.view(T * B, n, H, r).transpose(1, 2)     # (TB, H, n, r)
        scores = q @ k.transpose(-1, -2)
        if L.mask == "causal":
            scores = scores.masked_fill(_future(n, h.device), float("-inf"))
        z = torch.softmax(scores, dim=-1) @ v          # (TB, H, n, r)
    out = L.o(z)
    return out.to(h.dtype) if L.up is not None else out


def _future(n: int, device) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


def _core_per_head(q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, v_heads: list, n: int,
                   mask: str) -> torch.Tensor:
    """softmax(q_h k_h^T) v_h for each head h, one head's (TB, n, n) scores at a time. q, k: (T, B*n, H*k)
    as the joint products leave them; each head's queries and keys are strided views of them (no
    transpose copies), its values a view of the stream x (T, B*n, D) where they are one run of columns
    (no gather). Returns (TB, H, n, r), contiguous, as the model's pattern @ values leaves it."""
    D, H = x.shape[-1], len(v_heads)
    TB = x.shape[0] * x.shape[1] // n
    kh = q.shape[-1] // H
    q, k, xs = q.view(TB, n, H * kh), k.view(TB, n, H * kh), x.view(TB, n, D)
    zs = []
    for i, vc in enumerate(v_heads):
        s = torch.bmm(q[:, :, i * kh:(i + 1) * kh], k[:, :, i * kh:(i + 1) * kh].transpose(1, 2))
        if mask == "causal":
            s = s.masked_fill(_future(n, x.device), float("-inf"))
        v = xs[:, :, vc] if isinstance(vc, slice) else xs.index_select(2, vc)
        zs.append(torch.bmm(torch.softmax(s, dim=-1), v))
    return torch.stack(zs, 1)


_CORES: dict = {}


def _core_agrees(T: int, B: int, H: int, n: int, k: int, r: int, D: int, mask: str, cols: np.ndarray, dtype,
                 device, part: tuple = ()) -> bool:
    """Whether ``_core_per_head`` gives the model's pattern @ values (``algoformer.layer``: einsum
    queries, keys and values, q @ k^T of (B_all, H, n, k), softmax, @ v, for one construction's B_all
    problems) bit for bit on a chunk of T x B problems, for each chunk of ``part`` = (B_all, starts)
    (``_product``), with head i's values the columns ``cols[i*r:(i+1)*r]`` of a D-wide stream: probed
    once on random data (the kernels are chosen by shape and layout, not by the values)."""
    ref_B, starts = part or (B, (0,))
    key = (T, B, ref_B, tuple(starts), H, n, k, r, D, mask, cols.tobytes(), dtype, str(device))
    with _lock(key):
        if key not in _CORES:
            _CORES[key] = _probe_core(T, B, ref_B, starts, H, n, k, r, D, mask, cols, dtype, device)
    return _CORES[key]


def _probe_core(T, B, ref_B, starts, H, n, k, r, D, mask, cols, dtype, device) -> bool:
    """``_core_agrees``'s probe."""
    streams = iter(range(3, 6))
    rnd = lambda *shape: torch.from_numpy(_noise(shape, next(streams))).to(dtype=dtype, device=device)
    h, wq, wk = rnd(ref_B, n, D), rnd(H, k, D), rnd(H, k, D)
    wv = torch.zeros(H * r, D, dtype=dtype, device=device)
    wv[torch.arange(H * r), torch.from_numpy(cols)] = 1.0
    wv = wv.view(H, r, D)
    v_cols = [_index(cols[i * r:(i + 1) * r], device) for i in range(H)]
    q = torch.einsum("bnd,hkd->bhnk", h, wq)
    kk = torch.einsum("bnd,hkd->bhnk", h, wk)
    v = torch.einsum("bnd,hvd->bhnv", h, wv)
    scores = q @ kk.transpose(-1, -2)
    if mask == "causal":
        scores = scores.masked_fill(_future(n, device), float("-inf"))
    want = torch.softmax(scores, dim=-1) @ v
    # the candidate, per chunk: the same queries and keys (the joint products are probed against
    # this einsum), laid out as those products leave them, (1, T*B*n, H*k), the chunk T times over
    joint = lambda t, s: t[s:s + B].permute(0, 2, 1, 3).reshape(1, B * n, H * k).repeat(1, T, 1)
    ok = True
    for s in starts:
        got = _core_per_head(joint(q, s), joint(kk, s), h[s:s + B].reshape(1, B * n, D).repeat(1, T, 1),
                             v_cols, n, mask)
        ok = ok and all(torch.equal(got[t * B:(t + 1) * B], want[s:s + B]) for t in range(T))
    return ok


def emulate_many(cons: list[Construction], problem, iters: int, dtype: torch.dtype | str = torch.float64,
                 device: str = "cpu", pool: ChunkPool | None = None) -> list[Trajectory]:
    """``emulate.emulate(con, problem, iters, dtype, device, every_prediction=False)`` for each of
    ``cons``, in one packed forward (its problem chunks on ``pool`` where one is given)."""
    return Packed(cons, dtype, device).run(problem, iters, pool=pool)
