"""Model registry and backends; every backend returns PanopticResult."""
