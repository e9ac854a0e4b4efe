"""Shared test support: waiting on conditions and real servers started on loopback."""
