// Batched user load. Params: $rows = [{id}].
UNWIND $rows AS row
MERGE (u:User {id: row.id})
RETURN count(u) AS loaded
