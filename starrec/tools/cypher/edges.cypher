// Every distinct user-item pair (the scipy index behind bulk evidence builds is built from it).
MATCH (u:User)-[:INTERACTED]->(i:Item)
RETURN DISTINCT u.id AS user, i.id AS item
