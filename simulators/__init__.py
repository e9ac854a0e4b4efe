"""The gateway's wire protocols spoken from the other side, for tests and ops teams."""
