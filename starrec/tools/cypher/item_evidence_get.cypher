// Stored Item-CF evidence of one item (the online tool call). Params: $id.
MATCH (i:Item {id: $id})
RETURN i.id AS id, i.title AS title, i.evidence AS evidence, i.evidence_neighbours AS neighbours,
       i.evidence_k AS k, i.evidence_by AS by
