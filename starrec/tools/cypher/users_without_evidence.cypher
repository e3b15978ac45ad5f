// Users whose User-CF evidence is missing (what a resumed evidence build still has to do).
MATCH (u:User)
WHERE u.evidence IS NULL
RETURN u.id AS id
ORDER BY id
