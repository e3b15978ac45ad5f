// A user's training interactions with item titles and facets, oldest first. Params: $id.
MATCH (u:User {id: $id})-[e:INTERACTED]->(i:Item)
RETURN i.id AS item, i.title AS title, i.facets AS facets, e.ts AS ts, e.rating AS rating
ORDER BY ts, item
