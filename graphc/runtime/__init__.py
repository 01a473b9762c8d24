"""Running compiled steps: the variable store, the interface generated code implements, and the call path."""
