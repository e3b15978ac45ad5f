// Stored User-CF evidence of one user (the online tool call). Params: $id.
MATCH (u:User {id: $id})
RETURN u.id AS id, '' AS title, u.evidence AS evidence, u.evidence_neighbours AS neighbours,
       u.evidence_k AS k, u.evidence_by AS by
