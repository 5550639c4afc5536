"""pnbridge's built-in plugins."""
