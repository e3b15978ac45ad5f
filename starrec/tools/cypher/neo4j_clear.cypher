// Remove the starrec graph (users, items and their interactions) before a rebuild.
MATCH (n)
WHERE n:User OR n:Item
DETACH DELETE n
