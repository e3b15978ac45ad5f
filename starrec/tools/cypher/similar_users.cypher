// Stage 1 of User-CF on its own: users sharing the most distinct items with the anchor.
// Params: $id (user id), $users (rows).
MATCH (u:User {id: $id})-[:INTERACTED]->(it:Item)<-[:INTERACTED]-(v:User)
WHERE v <> u
RETURN v.id AS user, count(DISTINCT it) AS overlap
ORDER BY overlap DESC, user
LIMIT $users
