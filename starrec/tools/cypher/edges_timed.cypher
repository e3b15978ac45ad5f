// Every distinct user-item pair with its latest interaction time (the candidate-CF index and
// history order are built from it).
MATCH (u:User)-[e:INTERACTED]->(i:Item)
RETURN u.id AS user, i.id AS item, max(e.ts) AS ts
