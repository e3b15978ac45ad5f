// Batched interaction load (one edge per interaction). Params: $rows = [{user, item, ts, rating}].
UNWIND $rows AS row
MATCH (u:User {id: row.user})
MATCH (i:Item {id: row.item})
CREATE (u)-[:INTERACTED {ts: row.ts, rating: row.rating}]->(i)
RETURN count(*) AS loaded
