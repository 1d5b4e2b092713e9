"""The counselor terminal app (Textual)."""
