"""``starrec graph export --format neo4j-csv``: files for ``neo4j-admin database import full``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from starrec.tools.queries import load_query
from starrec.tools.store import GraphTables

ARRAY_DELIMITER = "|"
"""Between facets in items.csv; pass ``--array-delimiter='|'`` to neo4j-admin."""

IMPORT_COMMAND = (
    "neo4j-admin database import full --overwrite-destination "
    "--nodes=User=users.csv --nodes=Item=items.csv --relationships=INTERACTED=interactions.csv "
    f"--array-delimiter='{ARRAY_DELIMITER}' neo4j"
)


def write_neo4j_admin_csv(tables: GraphTables, out: Path, fingerprint: str = "") -> list[Path]:
    """users.csv, items.csv, interactions.csv (neo4j-admin header syntax), fingerprint.cypher, IMPORT.txt.

    ``fingerprint.cypher`` (for cypher-shell) records what the graph was built from, so
    ``open_toolkit(..., store="neo4j")`` accepts the imported graph for the same data and tasks.
    """
    out.mkdir(parents=True, exist_ok=True)
    users, items, edges = out / "users.csv", out / "items.csv", out / "interactions.csv"
    with users.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id:ID(User)"])
        writer.writerows([user] for user in tables.users)
    with items.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id:ID(Item)", "title", "facets:string[]"])
        for row in tables.items:
            facets = [facet.replace(ARRAY_DELIMITER, "/") for facet in row.facets]
            writer.writerow([row.id, row.title, ARRAY_DELIMITER.join(facets)])
    with edges.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([":START_ID(User)", ":END_ID(Item)", "ts:double", "rating:double"])
        for edge in tables.edges:
            writer.writerow([edge.user, edge.item, edge.ts, "" if edge.rating is None else edge.rating])
    marker = out / "fingerprint.cypher"
    marker.write_text(
        f":param fingerprint => {json.dumps(fingerprint)};\n{load_query('graph_fingerprint_set')};\n",
        encoding="utf-8",
    )
    guide = out / "IMPORT.txt"
    guide.write_text(
        "Copy these files into the Neo4j import folder (neo4j/import with neo4j/docker-compose.yml), stop\n"
        "the database, then run inside the container:\n\n"
        f"  {IMPORT_COMMAND}\n\n"
        "and start it again; then apply neo4j/schema.cypher (constraints) and fingerprint.cypher with\n"
        "  cypher-shell -u neo4j -p $NEO4J_PASSWORD -f FILE\n"
        "and build evidence with\n"
        "  starrec evidence build --data DIR --store neo4j\n",
        encoding="utf-8",
    )
    return [users, items, edges, marker, guide]
