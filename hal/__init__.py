"""Hardware abstraction: small device interfaces, real backends and a simulated charger."""
