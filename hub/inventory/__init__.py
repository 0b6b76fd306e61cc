"""Inventory at the hub: the ledger of stock movements, stock positions, shelf levels, restock tasks."""
