"""The Merkle tree against the RFC 6962 definition and the Certificate Transparency test
vectors, and its proofs against RFC 9162's verification algorithms."""

from __future__ import annotations

import hashlib

import pytest

from ledger.transparency import merkle

# certificate-transparency-go testdata: leaves and the roots of their prefixes.
LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                      "606162636465666768696a6b6c6d6e6f"]]  # fmt: skip
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written straight from the definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(mth(leaves[:k]), mth(leaves[k:]))


def build(leaves: list[bytes]) -> tuple[merkle.CompactRange, dict[tuple[int, int], bytes]]:
    tree, store = merkle.CompactRange(), {}
    for leaf in leaves:
        for level, index, h in tree.append(merkle.leaf_hash(leaf)):
            store[(level, index)] = h
    return tree, store


def lookup(store: dict[tuple[int, int], bytes]) -> merkle.Nodes:
    return lambda keys: {k: store[k] for k in keys if k in store}


def test_the_certificate_transparency_vectors() -> None:
    for n in range(1, len(LEAVES) + 1):
        assert mth(LEAVES[:n]).hex() == ROOTS[n - 1]
        tree, store = build(LEAVES[:n])
        assert tree.root().hex() == ROOTS[n - 1]
        assert merkle.root(n, lookup(store)).hex() == ROOTS[n - 1]


LEAF_DATA = [f"record {i}".encode() for i in range(70)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 32, 33, 70])
def test_inclusion_proofs_verify_and_have_the_rfc_length(size: int) -> None:
    tree, store = build(LEAF_DATA[:size])
    for index in range(size):
        proof = merkle.inclusion_proof(index, size, lookup(store))
        leaf = merkle.leaf_hash(LEAF_DATA[index])
        assert merkle.verify_inclusion(index, size, leaf, proof, tree.root())
        assert len(proof) <= (size - 1).bit_length()
        assert not merkle.verify_inclusion(index, size, merkle.leaf_hash(b"forged"), proof, tree.root())
        if proof:
            assert not merkle.verify_inclusion(index, size, leaf, proof[:-1], tree.root())


def test_consistency_proofs_between_every_pair_of_sizes() -> None:
    _tree, store = build(LEAF_DATA[:40])
    roots = [mth(LEAF_DATA[:n]) for n in range(41)]
    for old in range(1, 41):
        for new in range(old, 41):
            proof = merkle.consistency_proof(old, new, lookup(store))
            assert merkle.verify_consistency(old, new, roots[old], roots[new], proof), (old, new)
            if old < new:
                assert not merkle.verify_consistency(old, new, mth(LEAF_DATA[1 : old + 1]), roots[new], proof)


def test_a_rewritten_history_is_not_consistent() -> None:
    _, store = build(LEAF_DATA[:20])
    forged = [*LEAF_DATA[:5], b"rewritten", *LEAF_DATA[6:12]]
    proof = merkle.consistency_proof(12, 20, lookup(store))
    assert not merkle.verify_consistency(12, 20, mth(forged), mth(LEAF_DATA[:20]), proof)


def test_compact_range_resumes_from_its_edge() -> None:
    _tree, store = build(LEAF_DATA[:45])
    edge = [store[k] for k in merkle.CompactRange.edge_keys(45)]
    resumed = merkle.CompactRange(45, edge)
    for leaf in LEAF_DATA[45:70]:
        resumed.append(merkle.leaf_hash(leaf))
    assert resumed.root() == mth(LEAF_DATA[:70])


def test_missing_nodes_are_reported() -> None:
    with pytest.raises(LookupError):
        merkle.inclusion_proof(3, 8, lambda keys: {})
