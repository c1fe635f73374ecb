"""Energy meters: Modbus RTU and S0 pulse backends."""
