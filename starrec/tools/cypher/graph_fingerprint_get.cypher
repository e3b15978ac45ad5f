// Which data/tasks a server-side graph was built from (Neo4j backend; guards against reusing a
// graph that still holds held-out interactions).
MATCH (m:StarrecGraph {name: 'starrec'})
RETURN m.fingerprint AS fingerprint
