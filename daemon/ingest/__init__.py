"""Ingest: what a softphone reports, from the route templates and field names the config gives to a
normalized Report (fields, routes, normalize), and the JSON export/import of devices (transfer)."""
