"""One package per hardware interface; see gateway/driver.py for the contract."""
