"""First-party compose_gen plugins, each registered through the ``compose_gen`` entry-point group."""
