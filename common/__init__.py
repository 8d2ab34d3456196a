"""Infrastructure that every layer may use and that imports no layer: config-driven CLIs, file writes and
locks, chat templates."""
