"""The graph-search AlgoFormers (constructions/graphs): exact at every loop, halting on their flag,
failing where the precision analysis says they must, and the CLI's bad-input handling."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from constructions.bridge import build_model
from constructions.graphs import Graph, SearchSpec, first_mismatch, search_layout, search_weights
from verify.cli import main
from verify.graph_inputs import GraphFileError, random_graph, read_graph_file
from verify.graph_reference import reference
from verify.graphs import emulate, emulate_batch

nx = pytest.importorskip("networkx")


def _graph(n, edges, directed=False):
    adj, w = np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)
    for u, v, *wt in edges:
        for a, b in [(u, v)] + ([] if directed else [(v, u)]):
            adj[a, b], w[a, b] = 1, (wt[0] if wt else 1)
    return Graph(adj, w, directed)


HAND = {
    "single": _graph(1, []),
    "path": _graph(5, [(0, 1), (1, 2), (2, 3), (3, 4)]),
    "star": _graph(6, [(0, v) for v in range(1, 6)]),
    "complete": _graph(5, [(u, v, 1 + (u * v) % 3) for u in range(5) for v in range(u + 1, 5)]),
    "disconnected": _graph(6, [(0, 1), (1, 2), (3, 4), (4, 5)]),
    "ties_and_zeros": _graph(6, [(0, 1, 2), (0, 2, 2), (1, 3, 0), (2, 3, 0), (3, 4, 1), (1, 4, 1), (4, 5, 0)]),
    "directed_cycle": _graph(5, [(0, 1), (1, 2), (2, 3), (3, 0), (3, 4), (4, 1)], directed=True),
}


def _test_set():
    graphs = list(HAND.items())
    for n in (2, 5, 9, 13):
        for i, directed in enumerate((False, True)):
            rng = np.random.default_rng([7, n, i])
            graphs.append((f"random n={n} directed={directed}", random_graph(n, 0.35, 6, rng, directed)))
    return graphs


def _run(rule, g, dtype=torch.float64, lam=1e7, source=0, w=None):
    spec = SearchSpec(rule, g.n, lam, max(1, g.max_weight) if w is None else w)
    weights = search_weights(spec)
    return emulate(build_model(weights, dtype=dtype), weights.layout, rule, g, source, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("rule", ["bfs", "dfs", "dijkstra"])
def test_every_loop_exact_on_the_test_set(rule, dtype):
    """Every token of every loop equals the encoded reference state, and the model halts on its own
    flag right after the last reachable node is visited."""
    for name, g in _test_set():
        run = _run(rule, g, dtype)
        assert run.exact, f"{name}: {run.failure}"
        reachable = nx.descendants(_nx(g), 0) | {0}
        assert run.loops == len(reachable), name


def test_batch_of_graphs_halting_at_different_loops():
    """In a batch, graphs whose search ended keep looping with the others and must stay exactly at
    their final state (a fixed point), while the rest go on; each halts at its own loop."""
    rng = np.random.default_rng(11)
    graphs = [(random_graph(10, p, 9, rng, directed=True), s) for p, s in ((0.05, 0), (0.2, 3), (0.5, 7), (0.0, 1))]
    spec = SearchSpec("dijkstra", 10, 1e7, 9)
    w = search_weights(spec)
    runs = emulate_batch(build_model(w), w.layout, "dijkstra", graphs, torch.float64)
    assert all(r.exact for r in runs), [r.failure for r in runs]
    want = [len(nx.descendants(_nx(g), s)) + 1 for g, s in graphs]
    assert [r.loops for r in runs] == want and len(set(want)) > 1


def _nx(g: Graph):
    G = nx.DiGraph() if g.directed else nx.Graph()
    G.add_nodes_from(range(g.n))
    for u in range(g.n):
        for v in g.out_neighbours(u):
            G.add_edge(u, v, weight=int(g.weight[u, v]))
    return G


@pytest.mark.parametrize("name,g", _test_set())
def test_references_agree_with_networkx(name, g):
    """Our per-step references against networkx: BFS visit order and levels, DFS preorder (recursive,
    neighbours in index order: networkx iterates them in insertion order) and depths, Dijkstra distances."""
    G = _nx(g)
    bfs = reference("bfs", g, 0)
    assert [s.chosen for s in bfs[1:]] == [0] + [v for _, v in nx.bfs_edges(G, 0)]
    for v, lvl in nx.single_source_shortest_path_length(G, 0).items():
        assert bfs[-1].dist[v] == lvl
    dfs = reference("dfs", g, 0)
    assert [s.chosen for s in dfs[1:]] == list(nx.dfs_preorder_nodes(G, 0))
    for u, v in nx.dfs_edges(G, 0):
        assert dfs[-1].parent[v] == u and dfs[-1].dist[v] == dfs[-1].dist[u] + 1
    dij = reference("dijkstra", g, 0)
    for v, dist in nx.single_source_dijkstra_path_length(G, 0).items():
        assert dij[-1].dist[v] == dist
    assert all(s.term == (i == len(dij) - 1) for i, s in enumerate(dij))


def test_structure_width_and_heads():
    """4 layers and 2 heads per loop; width 4n + 20 (bfs, dfs) and 5n + 20 (dijkstra: W and wu, no k row)."""
    for n in (3, 10):
        for rule, width in (("bfs", 4 * n + 20), ("dfs", 4 * n + 20), ("dijkstra", 5 * n + 20)):
            w = search_weights(SearchSpec(rule, n, 1e7, 5))
            assert w.layout.dim == width
            assert len(w.loop) == 4 and sum(len(layer.heads) for layer in w.loop) == 2
            assert w.pre == () and w.post == ()


def test_a_dropped_clear_is_caught_in_the_scratch_register():
    """The comparison reads every row: leaving du uncleared in L3 must be reported on du."""
    g = HAND["path"]
    spec = SearchSpec("bfs", g.n, 1e7)
    w = search_weights(spec)
    lay = w.layout
    upd = w.loop[2].ffn
    keep = ~((upd.w2[lay.row("du")] != 0))                       # the units that clear du
    from constructions.weights import AlgoFormerWeights, FFNWeights, LayerWeights
    broken = FFNWeights(upd.w1[keep], upd.b1[keep], upd.w2[:, keep], upd.b2)
    loop = w.loop[:2] + (LayerWeights((), broken, name="update"),) + w.loop[3:]
    bad = AlgoFormerWeights(lay, (), loop, ())
    run = emulate(build_model(bad), lay, "bfs", g, 0, torch.float64)
    assert not run.exact and "row du" in run.failure and run.loops == 2   # du = d[u] = 1 first at loop 2


def test_warm_softmax_is_caught():
    """Analysis: with m active nodes the selection leaks about (m - 1) e^{-lam / n} off the winner, which
    round01 tolerates only below 1/4. Loop 1 has one active node (the source; the rest sit lam K lower),
    so it is exact; from loop 2 on the source's neighbours are active, and at lam = 1, n = 8 the leak
    is ~ e^{-1/8} per neighbour: loop 2 cannot be exact."""
    g = random_graph(8, 0.5, 1, np.random.default_rng(0))
    assert len(g.out_neighbours(0)) >= 2
    run = _run("bfs", g, lam=1.0)
    assert not run.exact and run.loops == 2


def test_bfloat16_cannot_resolve_the_tie_break():
    """Analysis: the winner's score is about lam * key and must be resolved to lam / n; with key ~ n / 2
    that needs n^2 / 2 below 2^8 (bfloat16's 8 significant bits) with room to spare. At n = 64 the keys
    of one BFS level differ by 1/64 on top of ~10: no bfloat16 value resolves that, so nodes tie."""
    g = random_graph(64, 0.1, 1, np.random.default_rng(3))
    assert not _run("bfs", g, dtype=torch.bfloat16).exact
    assert _run("bfs", g, dtype=torch.float32).exact


def test_the_distance_leak_matches_the_analysis_and_float32_absorbs_it():
    """du is a softmax average, the one value no FFN re-rounds. Directed 0->1 (1), 0->2 (2), 1->3 (1),
    n = 4: at loop 2 nodes 1 (d 1) and 2 (d 2) are active, their scores differ by lam (1 + 1/n), so
    du = 1 + e^{-lam (1 + 1/n)} and node 3 gets d = 2 + that leak. At lam = 20 the leak is 1.4e-11:
    above half an ulp of 2 in float64 (2.2e-16), below it in float32 (1.2e-7). So float64 must show
    the predicted leak and float32 must be exact; at lam = 30 (leak 5e-17) both are exact. The wider
    dtype needs the colder softmax."""
    import math
    g = _graph(4, [(0, 1, 1), (0, 2, 2), (1, 3, 1)], directed=True)
    run = _run("dijkstra", g, dtype=torch.float64, lam=20.0)
    assert not run.exact and run.loops == 2 and "token 3, row d" in run.failure
    got = float(run.failure.split("got ")[1].split(",")[0])
    assert got - 2.0 == pytest.approx(math.exp(-20.0 * 1.25), rel=1e-3)
    assert _run("dijkstra", g, dtype=torch.float32, lam=20.0).exact
    assert _run("dijkstra", g, dtype=torch.float64, lam=30.0).exact


def test_dijkstra_float32_weight_range_ends_by_2_to_24():
    """Distances are integers moved by float arithmetic: beyond 2^24 float32 cannot even hold them, so a
    path whose distance passes 2^24 + 1 must fail in float32 and hold in float64."""
    big = 2**24 + 1
    g = _graph(3, [(0, 1, big), (1, 2, 1)])
    assert not _run("dijkstra", g, dtype=torch.float32).exact
    assert _run("dijkstra", g, dtype=torch.float64).exact


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="rule='bellman'"):
        SearchSpec("bellman", 4, 1.0)
    with pytest.raises(ValueError, match="n=0"):
        SearchSpec("bfs", 0, 1.0)
    with pytest.raises(ValueError, match="lam=-1"):
        SearchSpec("bfs", 3, -1.0)
    with pytest.raises(ValueError, match=r"weight\[0, 1\]=-2"):
        Graph(np.array([[0, 1], [0, 0]]), np.array([[0, -2], [0, 0]]))
    assert search_layout(SearchSpec("dijkstra", 2, 1.0)).size("W") == 2


def _write(tmp_path, text):
    p = tmp_path / "g.txt"
    p.write_text(text)
    return str(p)


def test_graph_file_round_trip(tmp_path):
    g = read_graph_file(_write(tmp_path, "# a triangle\nnodes 3\ndirected\n0 1 4\n1 2\n2 0 0  # zero weight\n"))
    assert g.directed and g.adj.sum() == 3 and g.weight[0, 1] == 4 and g.weight[1, 2] == 1 and g.adj[2, 0] == 1


@pytest.mark.parametrize("text,fragment", [
    ("0 1\n", "first line must be 'nodes N'"),
    ("nodes x\n", "'x' is not an integer"),
    ("nodes 3\n0 3\n", "v=3 is outside the nodes 0..2"),
    ("nodes 3\n1 1\n", "self-loop"),
    ("nodes 3\n0 1 -5\n", "weight=-5 is negative"),
    ("nodes 3\n0 1\n1 0\n", "given twice"),
    ("nodes 3\n0 1 2 3\n", "expected 'u v [weight]'"),
])
def test_bad_graph_files(tmp_path, text, fragment):
    with pytest.raises(GraphFileError, match=re.escape(fragment)):
        read_graph_file(_write(tmp_path, text))


def _cli(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,fragment", [
    (["dijkstra", "--n", "0"], "--n"),
    (["bfs", "--n", "5000"], "--n"),
    (["bfs", "--dtype", "float16"], "--dtype"),
    (["dijkstra", "--max-weight", "-3"], "--max-weight"),
    (["bfs", "--p", "1.5"], "--p"),
    (["dfs", "--lam", "abc"], "--lam"),
    (["bfs", "--json", "/nonexistent_dir/x.json"], "--json"),
])
def test_cli_bad_arguments_exit_2_with_one_line(capsys, argv, fragment):
    code, out, err = _cli(capsys, argv)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1 and out == ""


def test_cli_bad_graph_file_and_source(capsys, tmp_path):
    code, _, err = _cli(capsys, ["dijkstra", "--graph-file", _write(tmp_path, "nodes 2\n0 1 -1\n")])
    assert code == 2 and "negative" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, ["bfs", "--graph-file", str(tmp_path / "missing.txt")])
    assert code == 2 and "cannot read" in err
    code, _, err = _cli(capsys, ["bfs", "--graph-file", _write(tmp_path, "nodes 2\n0 1\n"), "--source", "2"])
    assert code == 2 and "--source" in err


def test_cli_runs_a_file_and_writes_json(capsys, tmp_path):
    import json
    path = _write(tmp_path, "nodes 4\n0 1 3\n1 2 1\n0 2 5\n2 3 2\n")
    out_json = str(tmp_path / "r.json")
    code, out, _ = _cli(capsys, ["dijkstra", "--graph-file", path, "--dtype", "float64", "--json", out_json])
    assert code == 0 and out.startswith("config: rule=dijkstra dtypes=['float64'] device=")
    rows = json.load(open(out_json))["rows"]
    assert rows[0]["exact"] == 1 and rows[0]["loops"] == 4


def test_cli_draws_both_views(capsys, tmp_path):
    att, lay = tmp_path / "att.png", tmp_path / "lay.png"
    code, out, _ = _cli(capsys, ["bfs", "--n", "5", "--graphs", "1", "--dtype", "float32",
                                 "--show-attention", str(att), "--show-layout", str(lay)])
    assert code == 0 and att.stat().st_size > 0 and lay.stat().st_size > 0
    code, _, err = _cli(capsys, ["bfs", "--show-layout", str(tmp_path / "no" / "x.png")])
    assert code == 2 and "--show-layout" in err


def test_precision_benchmark_runs_at_tiny_sizes(capsys):
    """The sweep script's two tables at sizes that take a second. A weight bound of 2^11 is beyond
    bfloat16's 8 significant bits (weights drawn in [1, 2^11] are not representable): the W register
    must be named as what broke, while float32 holds it."""
    from benchmarks.graph_precision import main as bench
    assert bench(["--rules", "dijkstra", "--dtypes", "float32,bfloat16", "--lams", "1e7", "--sizes", "3",
                  "--graphs", "2", "--weight-n", "3", "--weights", "1,2048"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config: rules=['dijkstra']")
    table = out.split("largest weight bound")[1]
    assert "float32" in table and ">= 2^11 (all tried)" in table
    assert "1 (fails at 2^11: W[" in table


def test_the_model_s_own_halting_stops_each_graph_where_its_search_ends():
    """The termination flag drives ``AlgoFormer.forward_halting`` (the halting API of docs/halting.md):
    each graph of a batch stops at the loop its search ends, and its halted state is exactly the
    encoded reference's final state."""
    from algoformer.halting import Halting
    from constructions.graphs import encode
    rng = np.random.default_rng(12)
    graphs = [(random_graph(9, p, 7, rng, directed=True), s) for p, s in ((0.05, 0), (0.25, 2), (0.6, 5))]
    w = search_weights(SearchSpec("dijkstra", 9, 1e7, 7))
    model, lay = build_model(w), w.layout
    states = [reference("dijkstra", g, s) for g, s in graphs]
    x = torch.tensor(np.stack([encode(lay, g, st[0]) for (g, _), st in zip(graphs, states)]))
    with torch.no_grad():
        halted = model.forward_halting(x, Halting(rows=(lay.row("term"),), tokens=(0,)), max_loops=10)
    want = [len(nx.descendants(_nx(g), s)) + 1 for g, s in graphs]
    assert halted.loops.tolist() == want and len(set(want)) > 1
    for b, ((g, _), st) in enumerate(zip(graphs, states)):
        final = encode(lay, g, st[-1])
        assert first_mismatch(lay, halted.output[b].numpy(), final) is None
