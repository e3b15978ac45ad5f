// FalkorDB has no constraints and no IF NOT EXISTS: plain range indexes on the id properties.
CREATE INDEX FOR (u:User) ON (u.id);
CREATE INDEX FOR (i:Item) ON (i.id);
