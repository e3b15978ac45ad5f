// Whether a user has an edge to an item (leakage checks). Params: $user, $item.
MATCH (u:User {id: $user})-[e:INTERACTED]->(i:Item {id: $item})
RETURN count(e) AS edges
