// Store verbalised User-CF evidence. Params: $rows = [{id, evidence, neighbours (JSON), k, by}].
UNWIND $rows AS row
MATCH (u:User {id: row.id})
SET u.evidence = row.evidence, u.evidence_neighbours = row.neighbours, u.evidence_k = row.k,
    u.evidence_by = row.by
RETURN count(u) AS updated
