// Distinct users per item (the prior's last tie-breaker). Params: $ids (item ids).
MATCH (i:Item)<-[:INTERACTED]-(v:User)
WHERE i.id IN $ids
RETURN i.id AS item, count(DISTINCT v) AS users
ORDER BY item
