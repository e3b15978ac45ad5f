// Ladybug (Kuzu) DDL: node and rel tables must exist before COPY.
CREATE NODE TABLE User(id STRING, evidence STRING, evidence_neighbours STRING, evidence_k INT64, evidence_by STRING, values_profile STRING, values_top STRING[], values_by STRING, PRIMARY KEY (id));
CREATE NODE TABLE Item(id STRING, title STRING, facets STRING[], evidence STRING, evidence_neighbours STRING, evidence_k INT64, evidence_by STRING, PRIMARY KEY (id));
CREATE REL TABLE INTERACTED(FROM User TO Item, ts DOUBLE, rating DOUBLE);
