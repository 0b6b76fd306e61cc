"""Operators, their sessions and API tokens, the policy table that decides every route, and the audit log."""
