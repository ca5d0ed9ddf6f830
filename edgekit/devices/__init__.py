"""Where bundles run: local, over SSH, under user-mode ARM emulation; fleets of them."""
