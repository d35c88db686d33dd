"""Graph searches as looped transformers (after de Luca and Fountoulakis 2024, arXiv 2402.01107).

    tokens   graphs, search states, and the tokens that hold them (encode / decode)
    units    an FFN written one ReLU unit at a time on named rows
    search   BFS, DFS and Dijkstra: one loop = one iteration, 4 layers, 2 heads
"""
from .search import RULES, SearchSpec, search_layout, search_weights
from .tokens import Graph, SearchState, decode, encode, first_mismatch

__all__ = ["Graph", "RULES", "SearchSpec", "SearchState", "decode", "encode", "first_mismatch",
           "search_layout", "search_weights"]
