"""The online decoder daemon: settings, backends, streaming pipeline, service lifecycle."""
