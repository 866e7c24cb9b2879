"""Typed configuration: the schema, YAML loading and dotted ``key=value`` overrides."""
