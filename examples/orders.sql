-- The Feldera program the examples control. The operator never creates or edits pipelines: a team
-- deploys this SQL with its usual tooling (the demo does it with PUT /v0/pipelines/orders), and
-- the FelderaPipeline in orders-pipeline.yaml declares which connectors run.
CREATE TABLE orders (id BIGINT, amount INT) WITH ('connectors' = '[
  {"name": "backfill", "transport": {"name": "datagen", "config": {"plan": [{"limit": 1000}]}}},
  {"name": "live", "paused": true,
   "transport": {"name": "kafka_input", "config": {"bootstrap.servers": "kafka:9092", "topic": "orders"}},
   "format": {"name": "json"}}]');

CREATE MATERIALIZED VIEW big_orders WITH ('connectors' = '[
  {"name": "sink",
   "transport": {"name": "kafka_output", "config": {"bootstrap.servers": "kafka:9092", "topic": "big-orders"}},
   "format": {"name": "json"}}]')
AS SELECT * FROM orders WHERE amount > 100;
