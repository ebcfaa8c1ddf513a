"""The source model: where its files come from (source: hub, directory, GGUF), checks of those files before anything
loads them (files), and loading it (load)."""
