"""IndexBus: bounded shared-memory lanes (being written)."""
