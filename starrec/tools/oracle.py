"""In-process scipy.sparse CF index: the reference oracle and the fast bulk neighbour engine.

Answers exactly what ``item_cf.cypher`` / ``user_cf.cypher`` answer (distinct co-occurrence
counts, ties broken by id), from a binary user x item matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from starrec.tools.store import DEFAULT_SIMILAR_USERS, GraphTables


class SparseCFIndex:
    """Binary user x item incidence matrix with id <-> row/column maps."""

    def __init__(self, users: list[str], items: list[str], pairs: list[tuple[str, str]]) -> None:
        self.users = sorted(set(users))
        self.items = sorted(set(items))
        self.user_index = {user: position for position, user in enumerate(self.users)}
        self.item_index = {item: position for position, item in enumerate(self.items)}
        rows = np.fromiter((self.user_index[user] for user, _ in pairs), dtype=np.int64, count=len(pairs))
        cols = np.fromiter((self.item_index[item] for _, item in pairs), dtype=np.int64, count=len(pairs))
        matrix = sp.csr_matrix(
            (np.ones(len(pairs), dtype=np.int32), (rows, cols)), shape=(len(self.users), len(self.items))
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1  # repeated interactions count once: distinct users / items
        self.by_user = matrix
        self.by_item = self.by_user.tocsc()

    @classmethod
    def from_tables(cls, tables: GraphTables) -> SparseCFIndex:
        return cls(
            tables.users,
            [row.id for row in tables.items],
            [(edge.user, edge.item) for edge in tables.edges],
        )

    @staticmethod
    def _top(counts: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
        """Candidates ordered by count desc then id (indices are in id order), first k."""
        if k <= 0 or candidates.size == 0:
            return candidates[:0]
        order = np.lexsort((candidates, -counts[candidates]))
        return candidates[order[:k]]

    def item_cf(self, item_id: str, k: int) -> list[tuple[str, int]]:
        column = self.item_index.get(item_id)
        if column is None:
            return []
        users = self.by_item.indices[self.by_item.indptr[column] : self.by_item.indptr[column + 1]]
        counts = np.asarray(self.by_user[users].sum(axis=0)).ravel()
        counts[column] = 0
        top = self._top(counts, np.flatnonzero(counts), k)
        return [(self.items[index], int(counts[index])) for index in top]

    def similar_users(self, user_id: str, count: int = DEFAULT_SIMILAR_USERS) -> list[tuple[str, int]]:
        row = self.user_index.get(user_id)
        if row is None:
            return []
        own = self.by_user.indices[self.by_user.indptr[row] : self.by_user.indptr[row + 1]]
        overlap = np.asarray(self.by_item[:, own].sum(axis=1)).ravel()
        overlap[row] = 0
        top = self._top(overlap, np.flatnonzero(overlap), count)
        return [(self.users[index], int(overlap[index])) for index in top]

    def user_cf(
        self, user_id: str, k: int, similar_users: int = DEFAULT_SIMILAR_USERS
    ) -> list[tuple[str, int]]:
        row = self.user_index.get(user_id)
        if row is None:
            return []
        neighbours = [self.user_index[user] for user, _ in self.similar_users(user_id, similar_users)]
        if not neighbours:
            return []
        counts = np.asarray(self.by_user[neighbours].sum(axis=0)).ravel()
        counts[self.by_user.indices[self.by_user.indptr[row] : self.by_user.indptr[row + 1]]] = 0
        top = self._top(counts, np.flatnonzero(counts), k)
        return [(self.items[index], int(counts[index])) for index in top]
