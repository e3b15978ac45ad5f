// Batched item load. Params: $rows = [{id, title, facets}].
UNWIND $rows AS row
MERGE (i:Item {id: row.id})
SET i.title = row.title, i.facets = row.facets
RETURN count(i) AS loaded
