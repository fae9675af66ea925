"""The Merkle code against RFC 6962's definitions written naively over lists of leaves, for
trees of any size hypothesis picks (bounded examples keep the unit tier fast)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.transparency import merkle
from tests.unit.test_merkle import build, lookup, mth

# A shared machine: no per-example deadline, a bounded number of examples per property.
FAST = settings(max_examples=60, deadline=None)

# Small trees of arbitrary leaves, and trees up to a few hundred leaves (most shapes of edge).
leaves = st.one_of(
    st.lists(st.binary(max_size=6), min_size=1, max_size=40),
    st.integers(1, 400).map(lambda n: [i.to_bytes(2, "big") for i in range(n)]),
)


def _split(n: int) -> int:
    k = 1
    while 2 * k < n:
        k *= 2
    return k


def path(m: int, tree: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n])."""
    if len(tree) == 1:
        return []
    k = _split(len(tree))
    if m < k:
        return [*path(m, tree[:k]), mth(tree[k:])]
    return [*path(m - k, tree[k:]), mth(tree[:k])]


def subproof(m: int, tree: list[bytes], complete: bool) -> list[bytes]:
    """RFC 6962 section 2.1.2 SUBPROOF(m, D[n], b)."""
    if m == len(tree):
        return [] if complete else [mth(tree)]
    k = _split(len(tree))
    if m <= k:
        return [*subproof(m, tree[:k], complete), mth(tree[k:])]
    return [*subproof(m - k, tree[k:], False), mth(tree[:k])]


def _flip(proof: list[bytes], at: int) -> list[bytes]:
    changed = bytes([proof[at][0] ^ 1]) + proof[at][1:]
    return [*proof[:at], changed, *proof[at + 1 :]]


@FAST
@given(leaves)
def test_the_root_of_any_size_is_the_rfc_root(data: list[bytes]) -> None:
    tree, store = build(data)
    expected = mth(data)
    assert tree.root() == expected
    assert merkle.root(len(data), lookup(store)) == expected


@FAST
@given(leaves, st.data())
def test_inclusion_proofs_are_the_rfc_path_and_only_they_verify(
    data: list[bytes], draw: st.DataObject
) -> None:
    size = len(data)
    index = draw.draw(st.integers(0, size - 1), label="index")
    _, store = build(data)
    proof = merkle.inclusion_proof(index, size, lookup(store))
    assert proof == path(index, data)
    leaf, root = merkle.leaf_hash(data[index]), mth(data)
    assert merkle.verify_inclusion(index, size, leaf, proof, root)
    assert not merkle.verify_inclusion(index, size, merkle.leaf_hash(data[index] + b"x"), proof, root)
    if proof:
        at = draw.draw(st.integers(0, len(proof) - 1), label="tampered node")
        assert not merkle.verify_inclusion(index, size, leaf, _flip(proof, at), root)
        assert not merkle.verify_inclusion(index, size, leaf, proof[:-1], root)


@FAST
@given(leaves, st.data())
def test_consistency_proofs_are_the_rfc_proof_and_only_they_verify(
    data: list[bytes], draw: st.DataObject
) -> None:
    new = len(data)
    old = draw.draw(st.integers(1, new), label="old size")
    _, store = build(data)
    proof = merkle.consistency_proof(old, new, lookup(store))
    assert proof == subproof(old, data, True)
    old_root, new_root = mth(data[:old]), mth(data)
    assert merkle.verify_consistency(old, new, old_root, new_root, proof)
    if old < new:
        rewritten = [*data[: old - 1], data[old - 1] + b"x"]
        assert not merkle.verify_consistency(old, new, mth(rewritten), new_root, proof)
        at = draw.draw(st.integers(0, len(proof) - 1), label="tampered node")
        assert not merkle.verify_consistency(old, new, old_root, new_root, _flip(proof, at))


@FAST
@given(leaves, st.data())
def test_compact_range_appended_or_resumed_from_a_saved_edge_gives_one_tree(
    data: list[bytes], draw: st.DataObject
) -> None:
    cut = draw.draw(st.integers(0, len(data)), label="saved at size")
    whole, store = build(data)
    # Saved as a store keeps it: the size, and the edge read back from the stored nodes.
    _, saved = build(data[:cut])
    resumed = merkle.CompactRange(cut, [saved[k] for k in merkle.CompactRange.edge_keys(cut)])
    made = {}
    for leaf in data[cut:]:
        made.update({(level, index): h for level, index, h in resumed.append(merkle.leaf_hash(leaf))})
    assert resumed.size == whole.size == len(data)
    assert resumed.root() == whole.root() == mth(data)
    assert resumed.edge == whole.edge
    assert made == {k: h for k, h in store.items() if k not in saved}


@FAST
@given(leaves)
def test_compact_range_keeps_exactly_the_perfect_subtrees(data: list[bytes]) -> None:
    _, store = build(data)
    perfect = {
        (level, index): mth(data[index << level : (index + 1) << level])
        for level in range(len(data).bit_length())
        for index in range(len(data) >> level)
    }
    assert store == perfect
