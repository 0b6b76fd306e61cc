"""Administration of the hub outside its running process: backup and restore of its database, and the
backups' signed manifests."""
