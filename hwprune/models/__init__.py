"""Built-in example networks, registered by name."""
