// Remove the starrec graph (users, items, their interactions and the fingerprint node).
MATCH (n)
WHERE n:User OR n:Item OR n:StarrecGraph
DETACH DELETE n
