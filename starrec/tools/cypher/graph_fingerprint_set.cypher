// Record which data/tasks the server-side graph was built from. Params: $fingerprint.
MERGE (m:StarrecGraph {name: 'starrec'})
SET m.fingerprint = $fingerprint
RETURN m.fingerprint AS fingerprint
