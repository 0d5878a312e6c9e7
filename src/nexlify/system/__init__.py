"""Machine-level concerns: device, resources and pre-flight checks."""
