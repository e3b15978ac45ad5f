// User-CF: User -> Item -> User, then what those users liked. Stage 1 keeps the $users users
// sharing the most distinct items with the anchor (ties by user id); stage 2 counts, for every
// item the anchor has not interacted with, how many of them interacted with it.
// Params: $id (user id), $users (similar users kept), $k (rows).
MATCH (u:User {id: $id})-[:INTERACTED]->(own:Item)
WITH u, collect(DISTINCT own.id) AS seen
MATCH (u)-[:INTERACTED]->(it:Item)<-[:INTERACTED]-(v:User)
WHERE v <> u
WITH seen, v, count(DISTINCT it) AS overlap
ORDER BY overlap DESC, v.id
LIMIT $users
MATCH (v)-[:INTERACTED]->(j:Item)
WHERE NOT j.id IN seen
RETURN j.id AS item, count(DISTINCT v) AS shared
ORDER BY shared DESC, item
LIMIT $k
