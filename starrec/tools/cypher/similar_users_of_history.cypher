// Stage 1 of candidate-scoped User-CF on its own: the users sharing the most distinct items with
// a history (the user $id excluded; ties by user id). Params: $id, $history (item ids), $users.
MATCH (it:Item)<-[:INTERACTED]-(v:User)
WHERE it.id IN $history AND v.id <> $id
RETURN v.id AS user, count(DISTINCT it) AS overlap
ORDER BY overlap DESC, user
LIMIT $users
