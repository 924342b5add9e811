"""Implementation detail of membrane_otel: may change without notice."""
