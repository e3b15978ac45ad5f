// Items whose Item-CF evidence is missing (what a resumed evidence build still has to do).
MATCH (i:Item)
WHERE i.evidence IS NULL
RETURN i.id AS id
ORDER BY id
