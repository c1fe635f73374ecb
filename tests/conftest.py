"""Shared test setup. Hardware is mocked only at the pin level (gpiozero's MockFactory)."""
import os

os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")
