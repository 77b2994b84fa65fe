-- The distinct values each open dimension of each metric has taken, shared by the fleet so
-- that a dimension's max_values bounds its values on every host at once (on InfluxDB each
-- value is a tag value). Rows are only added; a transaction-scoped advisory lock per
-- (metric, dimension) serialises hosts admitting values of the same dimension.
CREATE TABLE dimension_values (
    metric_id text NOT NULL,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (metric_id, name, value)
);
