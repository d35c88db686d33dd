"""Explicit weights from the AlgoFormer proofs (arXiv 2402.13572, Appendix A), as pure numpy.

One concept per module:
    layout       named residual rows                      weights     frozen weight dataclasses
    reference    numpy interpreter of Eq. 1               bridge      weights -> torch AlgoFormer
    embeddings   Lemma A.1 + the pairing head             linearise   the e^C / c trick, its variants and bounds
    gadgets      exact ReLU feed-forward maps             prompt      encoders, read-outs, Construction
    gd           Lemma A.2 + the GD AlgoFormer            newton      Lemma A.4 + Theorem 4.1
Never imports ``verify``.
"""
from .layout import Layout
from .linearise import DEFAULT_VARIANT, VARIANTS, Temperature
from .prompt import Construction, Readout
from .weights import AlgoFormerWeights, FFNWeights, HeadWeights, LayerWeights

__all__ = ["AlgoFormerWeights", "Construction", "DEFAULT_VARIANT", "FFNWeights", "HeadWeights", "Layout",
           "LayerWeights", "Readout", "Temperature", "VARIANTS"]
