// Candidate-scoped User-CF: the $users users sharing the most distinct items with the history
// (ties by user id; the user $id is not its own neighbour), then, for each candidate, how many
// of them chose it. Stage 1 hands on ids, not nodes: on Ladybug 0.22 a node variable carried past
// `ORDER BY ... LIMIT` in a WITH loses the limit in the next MATCH.
// Params: $id (user id), $history (item ids), $users (neighbours kept), $candidates (item ids).
MATCH (it:Item)<-[:INTERACTED]-(v:User)
WHERE it.id IN $history AND v.id <> $id
WITH v.id AS neighbour, count(DISTINCT it) AS overlap
ORDER BY overlap DESC, neighbour
LIMIT $users
MATCH (w:User {id: neighbour})-[:INTERACTED]->(c:Item)
WHERE c.id IN $candidates
RETURN c.id AS item, count(DISTINCT w) AS users
ORDER BY item
