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
        self.item_users = self.by_user.T.tocsr()
        """item x user rows: the candidate-scoped co-occurrence block is one sparse product of them."""
        self.popularity = np.diff(self.by_item.indptr)
        """Distinct users per item column."""

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

    # --- candidate-scoped CF (what candidate_item_cf.cypher / candidate_user_cf.cypher answer) ----
    def candidate_pairs(
        self, anchors: list[str], candidates: list[str]
    ) -> list[tuple[str, str, int, int, int]]:
        """(anchor, candidate, shared users, anchor users, candidate users) for co-chosen pairs."""
        anchor_ids = sorted({item for item in anchors if item in self.item_index})
        candidate_ids = sorted({item for item in candidates if item in self.item_index})
        if not anchor_ids or not candidate_ids:
            return []
        rows = np.array([self.item_index[item] for item in anchor_ids])
        columns = np.array([self.item_index[item] for item in candidate_ids])
        shared = (self.item_users[rows] @ self.item_users[columns].T).toarray()
        anchor_at, candidate_at = np.nonzero(shared)
        keep = rows[anchor_at] != columns[candidate_at]
        anchor_at, candidate_at = anchor_at[keep], candidate_at[keep]
        counts = shared[anchor_at, candidate_at]
        anchor_users = self.popularity[rows[anchor_at]]
        candidate_users = self.popularity[columns[candidate_at]]
        # np.nonzero walks row-major: pairs come out sorted by (anchor id, candidate id).
        return [
            (anchor_ids[a], candidate_ids[c], int(n), int(au), int(cu))
            for a, c, n, au, cu in zip(
                anchor_at.tolist(), candidate_at.tolist(), counts.tolist(),
                anchor_users.tolist(), candidate_users.tolist(), strict=True,
            )
        ]  # fmt: skip

    def history_neighbours(self, user_id: str, history: list[str], count: int) -> list[tuple[str, int]]:
        """The ``count`` users (not ``user_id``) sharing the most distinct ``history`` items; ties by id."""
        columns = sorted({self.item_index[item] for item in history if item in self.item_index})
        if not columns or count <= 0:
            return []
        wanted = np.zeros(len(self.items), dtype=np.int32)
        wanted[columns] = 1
        overlap = self.by_user @ wanted  # one sparse mat-vec: distinct history items per user
        own = self.user_index.get(user_id)
        if own is not None:
            overlap[own] = 0
        top = self._top(overlap, np.flatnonzero(overlap), count)
        return [(self.users[index], int(overlap[index])) for index in top]

    def candidate_user_cf(
        self, user_id: str, history: list[str], candidates: list[str], count: int
    ) -> tuple[int, dict[str, int]]:
        """(nearest users found, candidate -> how many of them chose it) for the ``count`` nearest users."""
        neighbours = [self.user_index[user] for user, _ in self.history_neighbours(user_id, history, count)]
        known = sorted({item for item in candidates if item in self.item_index})
        if not neighbours or not known:
            return len(neighbours), {}
        chosen_by = np.zeros(len(self.users), dtype=np.int32)
        chosen_by[neighbours] = 1
        counts = self.item_users[[self.item_index[item] for item in known]] @ chosen_by
        return len(neighbours), {item: int(n) for item, n in zip(known, counts, strict=True) if n > 0}

    def item_popularity(self, items: list[str]) -> dict[str, int]:
        """Distinct users of each known item with at least one user."""
        columns = {item: self.item_index[item] for item in items if item in self.item_index}
        return {item: int(self.popularity[c]) for item, c in columns.items() if self.popularity[c] > 0}
