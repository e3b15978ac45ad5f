// Candidate-scoped Item-CF: for every (anchor, candidate) pair that shares users, the number of
// distinct users behind the pair and each side's distinct-user count (the cosine's denominator).
// The caller weighs the pairs by the anchor's recency (starrec.tools.candidate_cf.item_cf_scores).
// A candidate is never paired with itself. Params: $anchors (item ids, the user's recent history),
// $candidates (item ids to score).
MATCH (a:Item)<-[:INTERACTED]-(v:User)-[:INTERACTED]->(c:Item)
WHERE a.id IN $anchors AND c.id IN $candidates AND a.id <> c.id
WITH a, c, count(DISTINCT v) AS shared
MATCH (a)<-[:INTERACTED]-(x:User)
WITH a, c, shared, count(DISTINCT x) AS anchor_users
MATCH (c)<-[:INTERACTED]-(y:User)
RETURN a.id AS anchor, c.id AS item, shared, anchor_users, count(DISTINCT y) AS item_users
ORDER BY anchor, item
