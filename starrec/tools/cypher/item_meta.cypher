// Titles and facets ("genre=Comedy", "author=...") of a batch of items. Params: $rows = [{id}].
UNWIND $rows AS row
MATCH (i:Item {id: row.id})
RETURN i.id AS id, i.title AS title, i.facets AS facets
