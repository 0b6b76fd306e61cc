"""Device drivers: one small unit per kind of store device behind one async interface."""
