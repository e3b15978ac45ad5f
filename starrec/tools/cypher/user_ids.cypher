// Every user id, sorted (the evidence builder's work list).
MATCH (u:User)
RETURN u.id AS id
ORDER BY id
