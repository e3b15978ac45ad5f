// Ladybug bulk load: COPY scans the in-process Arrow tables named users, items and edges
// (column order = table definition; edges are from, to, ts, rating).
COPY User FROM users;
COPY Item FROM items;
COPY INTERACTED FROM edges;
