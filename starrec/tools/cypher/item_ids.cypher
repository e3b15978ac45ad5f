// Every item id, sorted (the evidence builder's work list).
MATCH (i:Item)
RETURN i.id AS id
ORDER BY id
