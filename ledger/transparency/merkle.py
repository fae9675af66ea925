"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.

Trees are read through a `Nodes` function giving the root of a perfect, aligned subtree
(level, index): the hash of leaves [index * 2**level, (index + 1) * 2**level). Everything
else (roots of any size, inclusion and consistency proofs) is built from those nodes, so a
store needs to keep only perfect subtrees and a proof needs O(log n) of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

Nodes = Callable[[list[tuple[int, int]]], dict[tuple[int, int], bytes]]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than size (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


class _Plan:
    """Runs a tree computation twice: first to learn which nodes it needs, then with them
    fetched in one round trip."""

    def __init__(self, nodes: Nodes) -> None:
        self.nodes = nodes
        self.wanted: list[tuple[int, int]] = []
        self.have: dict[tuple[int, int], bytes] | None = None

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that RFC 6962's recursion produces."""
        size = end - start
        if size & (size - 1) == 0:
            level = size.bit_length() - 1
            key = (level, start >> level)
            if self.have is None:
                self.wanted.append(key)
                return b""
            return self.have[key]
        k = _split(size)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def run(self, compute: Callable[[_Plan], object]) -> object:
        compute(self)
        self.have = self.nodes(sorted(set(self.wanted))) if self.wanted else {}
        missing = set(self.wanted) - self.have.keys()
        if missing:
            raise LookupError(f"tree nodes missing from the store: {sorted(missing)[:5]}")
        return compute(self)


def root(size: int, nodes: Nodes) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    result = _Plan(nodes).run(lambda p: p.subtree(0, size))
    assert isinstance(result, bytes)
    return result


def inclusion_proof(index: int, size: int, nodes: Nodes) -> list[bytes]:
    """RFC 6962 PATH(index, D[size])."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")

    def path(p: _Plan, m: int, start: int, end: int) -> list[bytes]:
        if end - start == 1:
            return []
        k = _split(end - start)
        if m < k:
            return [*path(p, m, start, start + k), p.subtree(start + k, end)]
        return [*path(p, m - k, start + k, end), p.subtree(start, start + k)]

    result = _Plan(nodes).run(lambda p: path(p, index, 0, size))
    assert isinstance(result, list)
    return result


def consistency_proof(old: int, new: int, nodes: Nodes) -> list[bytes]:
    """RFC 6962 PROOF(old, D[new])."""
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from size {old} to {new}")

    def subproof(p: _Plan, m: int, start: int, end: int, complete: bool) -> list[bytes]:
        if m == end - start:
            return [] if complete else [p.subtree(start, end)]
        k = _split(end - start)
        if m <= k:
            return [*subproof(p, m, start, start + k, complete), p.subtree(start + k, end)]
        return [*subproof(p, m - k, start + k, end, False), p.subtree(start, start + k)]

    result = _Plan(nodes).run(lambda p: subproof(p, old, 0, new, True))
    assert isinstance(result, list)
    return result


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Iterable[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if old == new:
        return not proof and old_root == new_root
    if not 0 < old < new or not proof:
        return False
    path = [old_root, *proof] if old & (old - 1) == 0 else list(proof)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class CompactRange:
    """The right edge of a growing tree: the roots of its perfect subtrees, largest first.
    Appending a leaf yields the perfect nodes it completes, for a store to keep."""

    def __init__(self, size: int = 0, edge: list[bytes] | None = None) -> None:
        self.size = size
        self.edge = list(edge or [])  # one hash per set bit of size, highest bit first

    @staticmethod
    def edge_keys(size: int) -> list[tuple[int, int]]:
        """The (level, index) of the perfect subtrees that make up a tree of `size`."""
        keys, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                keys.append((level, start >> level))
                start += 1 << level
        return keys

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf; returns the new perfect nodes (level, index, hash), the leaf first."""
        index = self.size
        made = [(0, index, leaf)]
        h, level = leaf, 0
        while index >> level & 1:
            h = node_hash(self.edge.pop(), h)
            level += 1
            made.append((level, index >> level, h))
        self.edge.append(h)
        self.size += 1
        return made

    def root(self) -> bytes:
        if not self.edge:
            return EMPTY_ROOT
        r = self.edge[-1]
        for h in reversed(self.edge[:-1]):
            r = node_hash(h, r)
        return r
