import pytest
from hypothesis import given, strategies as st

from constructions.layout import Layout

names = st.lists(st.text("abcdefgh_", min_size=1, max_size=6), min_size=1, max_size=12, unique=True)


@given(names, st.data())
def test_blocks_are_disjoint_contiguous_and_cover_the_rows(ns, data):
    lay = Layout()
    sizes = [data.draw(st.integers(1, 5)) for _ in ns]
    for n, s in zip(ns, sizes):
        lay.add(n, s)
    covered = []
    for n, s in zip(ns, sizes):
        block = lay[n]
        assert block.stop - block.start == s
        covered += list(range(block.start, block.stop))
    assert covered == list(range(lay.dim))          # insertion order, no gap, no overlap
    assert len(lay.labels()) == lay.dim == sum(sizes)


def test_duplicate_and_bad_names_are_errors():
    lay = Layout(); lay.add("x", 3)
    with pytest.raises(ValueError, match="name='x' is already in the layout"):
        lay.add("x", 1)
    with pytest.raises(ValueError, match="size=0 for 'y' is invalid"):
        lay.add("y", 0)
    with pytest.raises(KeyError, match="no register 'z'"):
        lay["z"]
    with pytest.raises(ValueError, match="register 'x' has 3 rows"):
        lay.row("x")


def test_labels_name_rows():
    lay = Layout(); lay.add("x", 2); lay.add("one", 1)
    assert lay.labels() == ["x[0]", "x[1]", "one"]
