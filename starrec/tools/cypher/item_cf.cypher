// Item-CF: Item -> User -> Item. Items co-interacted with the anchor, ranked by the number of
// distinct users behind the link; ties broken by item id. Params: $id (item id), $k (rows).
MATCH (i:Item {id: $id})<-[:INTERACTED]-(u:User)-[:INTERACTED]->(j:Item)
WHERE j <> i
RETURN j.id AS item, count(DISTINCT u) AS shared
ORDER BY shared DESC, item
LIMIT $k
