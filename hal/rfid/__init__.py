"""RFID/NFC readers on serial ports."""
