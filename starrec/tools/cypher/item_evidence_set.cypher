// Store verbalised Item-CF evidence. Params: $rows = [{id, evidence, neighbours (JSON), k, by}].
UNWIND $rows AS row
MATCH (i:Item {id: row.id})
SET i.evidence = row.evidence, i.evidence_neighbours = row.neighbours, i.evidence_k = row.k,
    i.evidence_by = row.by
RETURN count(i) AS updated
