"""Pure domain logic: data in, data out, no I/O."""
