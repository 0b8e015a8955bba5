"""The benchmark harness: seed a metropolitan region, run the service, measure (SPEC §7)."""
