// Store mined value profiles on User nodes (starrec values mine).
// Params: $rows = [{id, values_json (the profile JSON), top (the three strongest values), by (the miner's label)}].
UNWIND $rows AS row
MATCH (u:User {id: row.id})
SET u.values_profile = row.values_json, u.values_top = row.top, u.values_by = row.by
RETURN count(u) AS updated
