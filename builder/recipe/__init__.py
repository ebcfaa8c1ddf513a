"""The recipe: its schema (pydantic, validated once at the edge), loading a YAML file with every problem located
(file:line, field path, valid choices), and `--set key.path=value` overrides applied before validation."""
