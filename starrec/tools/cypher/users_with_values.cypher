// Users that have a mined value profile (what a resumed `starrec values mine` skips).
MATCH (u:User)
WHERE u.values_profile IS NOT NULL
RETURN u.id AS id
ORDER BY id
