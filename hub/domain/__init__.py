"""The hub's pure domain core: rules and calculations without I/O."""
