// Node and edge counts, for build summaries and reuse checks.
MATCH (u:User)
WITH count(u) AS users
MATCH (i:Item)
WITH users, count(i) AS items
OPTIONAL MATCH (:User)-[e:INTERACTED]->(:Item)
RETURN users, items, count(e) AS interactions
